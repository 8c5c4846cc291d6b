"""The configuration store's one interface, and what it returns.

A store holds the mesh configuration as ``(name, text)`` pairs, the input of
:func:`sailplane.config.loader.load_texts`: a directory (file names, file
contents) or etcd (one object a key, named so that diagnostics still point
at the file and line it was applied from). ``read()`` is blocking and runs in
the reloader's worker thread; ``changes()`` runs on the event loop and says
when to read again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from sailplane.model.source import Diagnostic


@dataclass(frozen=True, slots=True)
class StoreContents:
    """Everything in the store at one moment."""

    texts: tuple[tuple[str, str], ...]  # (name for diagnostics, YAML text)
    unread: tuple[Diagnostic, ...] = ()  # entries that could not be read: errors
    revision: int = 0  # the store's revision (etcd's); 0 for a directory


@dataclass(frozen=True, slots=True)
class Change:
    """Read the store again: something changed (or may have, ``reason``).
    ``first_seen`` is ``time.monotonic()`` when the change was first seen."""

    first_seen: float
    reason: str = "changed"  # changed | compacted | reconnected
    revision: int = 0


class ConfigStore(Protocol):
    """Where the configuration lives: read it all, hear when it changes."""

    @property
    def description(self) -> str:
        """What to call the store in logs and views (a directory, a URL)."""
        ...

    @property
    def problem(self) -> str | None:
        """Why the store cannot be read now (unreachable), or None."""
        ...

    def read(self) -> StoreContents:
        """Everything, now. Raises StoreUnavailable when the store cannot be reached."""
        ...

    def start(self) -> None:
        """Begin watching (on the event loop), before the first ``changes()``."""
        ...

    def changes(self) -> AsyncIterator[Change]:
        """One :class:`Change` per settled change, forever."""
        ...

    def stop(self) -> None:
        """Stop watching; release connections."""
        ...
