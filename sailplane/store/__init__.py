"""Where the configuration lives: a directory (the default) or etcd.

``ConfigStore`` (base.py) is the one interface the reloader reads through:
``read()`` everything as ``(name, text)`` pairs, ``changes()`` to hear when
to read again. ``DirectoryStore`` is ``--config-dir``; ``EtcdStore`` is
``--config-store etcd://...`` (one object a key, written by ``sailplane
apply`` in one transaction). ``etcdpb/`` holds etcd's API messages, generated.

May import config, model, errors and logs; the server and the CLI use it.
"""

from __future__ import annotations

from sailplane.store.base import Change, ConfigStore, StoreContents
from sailplane.store.directory import DirectoryStore
from sailplane.store.etcdstore import EtcdStore, EtcdURL, parse_url

__all__ = [
    "Change",
    "ConfigStore",
    "DirectoryStore",
    "EtcdStore",
    "EtcdURL",
    "StoreContents",
    "open_etcd",
    "parse_url",
]


def open_etcd(url: str, max_value_size: int) -> EtcdStore:
    """The etcd store at ``url``; ValueError for a URL that is not one."""
    return EtcdStore(parse_url(url), max_value_size)
