"""The etcd store: ``--config-store etcd://HOST:PORT[,HOST:PORT...][/PREFIX]``.

Reading is one linearizable Range over ``PREFIX/`` (sorted by key, so every
replica names and orders the objects alike and computes the same content
hash) at one revision. Watching is etcd's Watch from that revision + 1:
no polling, and no gap when the stream breaks (it resumes from the last
revision seen, on the next endpoint). When etcd has compacted that revision
away, the watcher asks for a clean re-list and watches from the revision the
re-list read. An entry that is not a mesh object (a wrong key shape, a value
over ``--max-file-size``, a value that names another object than its key) is
an error of the load, like a file that cannot be read: the configuration in
force stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from sailplane.errors import StoreError, StoreUnavailable
from sailplane.model.source import Diagnostic, Position
from sailplane.store.base import Change, StoreContents
from sailplane.store.etcdclient import EtcdClient, EtcdTLS, range_end
from sailplane.store.etcdpb import kv_pb2, rpc_pb2
from sailplane.store.objects import (
    DEFAULT_MAX_KEYS,
    DEFAULT_PREFIX,
    RESERVED,
    BadEntry,
    StoredObject,
    decode,
    load_texts_of,
)

log = logging.getLogger("sailplane.store")

SCHEME = "etcd://"
TLS_SCHEME = "etcds://"
_URL_FORM = "etcd[s]://HOST:PORT[,HOST:PORT...][/PREFIX][?ca=FILE&cert=FILE&key=FILE]"
# Waits between watch attempts while etcd is unreachable (seconds).
_RETRY_FIRST, _RETRY_MAX = 0.2, 2.0


@dataclass(frozen=True, slots=True)
class EtcdURL:
    endpoints: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    tls: EtcdTLS | None = None  # etcds://

    def __str__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.endpoints)
        if self.tls is None:
            return f"{SCHEME}{hosts}{self.prefix}"
        files = {"ca": self.tls.ca, "cert": self.tls.cert, "key": self.tls.key}
        query = "&".join(f"{k}={v}" for k, v in files.items() if v is not None)
        return f"{TLS_SCHEME}{hosts}{self.prefix}{'?' + query if query else ''}"


def parse_url(url: str) -> EtcdURL:
    """``etcd://a:2379,b:2379/sailplane`` -> endpoints and prefix;
    ``etcds://...?ca=FILE&cert=FILE&key=FILE``: TLS to etcd, with the CA of
    its certificate (else the system's roots) and a client certificate for
    its --client-cert-auth. ValueError for anything else."""
    if url.startswith(TLS_SCHEME):
        rest, tls = url[len(TLS_SCHEME) :], True
    elif url.startswith(SCHEME):
        rest, tls = url[len(SCHEME) :], False
    else:
        raise ValueError(f"not an etcd URL: {url!r} ({_URL_FORM})")
    rest, question, query = rest.partition("?")
    if question and not tls:
        raise ValueError(f"{url!r}: ?ca=, cert=, key= are for etcds:// (TLS) URLs")
    hosts, slash, prefix = rest.partition("/")
    endpoints: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {item!r} in {url!r}: give HOST:PORT")
        endpoints.append((host, int(port)))
    prefix = "/" + prefix.strip("/") if slash and prefix.strip("/") else DEFAULT_PREFIX
    if any(not part or part.startswith(RESERVED) for part in prefix.strip("/").split("/")):
        raise ValueError(f"bad prefix {prefix!r} in {url!r}")
    return EtcdURL(tuple(endpoints), prefix, _tls(url, query) if tls else None)


def _tls(url: str, query: str) -> EtcdTLS:
    files: dict[str, Path] = {}
    for item in filter(None, query.split("&")):
        name, equals, value = item.partition("=")
        if name not in ("ca", "cert", "key") or not equals or not value or name in files:
            raise ValueError(f"bad {item!r} in {url!r}: give ca=FILE, cert=FILE, key=FILE once")
        files[name] = Path(value)
    if ("cert" in files) != ("key" in files):
        raise ValueError(f"{url!r}: cert= and key= go together")
    return EtcdTLS(files.get("ca"), files.get("cert"), files.get("key"))


@dataclass(frozen=True, slots=True)
class Listing:
    """The objects under the prefix at one revision, with each key's
    mod_revision (what a transaction compares), and the entries that are not
    mesh objects."""

    objects: dict[str, tuple[StoredObject, int]]  # KIND/NS/NAME -> object, mod_revision
    problems: tuple[Diagnostic, ...]
    revision: int


class EtcdStore:
    """etcd as a :class:`~sailplane.store.base.ConfigStore`, plus the writes
    ``sailplane apply`` and ``delete`` make (:meth:`commit`)."""

    def __init__(
        self,
        url: EtcdURL,
        max_value_size: int,
        max_keys: int = DEFAULT_MAX_KEYS,
        client: EtcdClient | None = None,
    ) -> None:
        self.url = url
        self.max_value_size = max_value_size
        self.max_keys = max_keys
        self.client = client or EtcdClient(url.endpoints, tls=url.tls)
        self.revision = 0  # of the last successful read
        self._watched = 0  # the last revision the watch delivered
        self._problem: str | None = None
        # (key, mod_revision) -> the decoded object: a value is checked once.
        self._decoded: dict[tuple[str, int], StoredObject] = {}

    @property
    def description(self) -> str:
        return str(self.url)

    @property
    def problem(self) -> str | None:
        return self._problem

    @property
    def _key_prefix(self) -> bytes:
        return (self.url.prefix + "/").encode()

    def list(self) -> Listing:
        """Every object under the prefix; StoreUnavailable when etcd is not reachable."""
        try:
            kvs, more, revision = self._range_configuration()
        except StoreUnavailable as exc:
            self._problem = str(exc)
            raise
        self._problem = None
        if len(kvs) > self.max_keys or more:
            message = (
                f"more than {self.max_keys:,} keys under {self.url.prefix}/: "
                "the store is not read (the limit bounds one read's memory)"
            )
            return Listing({}, (Diagnostic(str(self.url), Position(1, 1), message),), revision)
        objects: dict[str, tuple[StoredObject, int]] = {}
        problems: list[Diagnostic] = []
        decoded: dict[tuple[str, int], StoredObject] = {}
        for kv in kvs:
            path = kv.key[len(self._key_prefix) :].decode("utf-8", "replace")
            if path.startswith(RESERVED):
                continue  # sailplane's own records, not configuration
            cached = self._decoded.get((path, kv.mod_revision))
            try:
                stored = cached or decode(path, kv.value, self.max_value_size)
            except BadEntry as exc:
                problems.append(Diagnostic(f"etcd:{path}", Position(1, 1), str(exc)))
                continue
            decoded[(path, kv.mod_revision)] = stored
            objects[path] = (stored, kv.mod_revision)
        self._decoded = decoded
        return Listing(objects, tuple(problems), revision)

    def _range_configuration(self) -> tuple[tuple[kv_pb2.KeyValue, ...], bool, int]:
        """The keys under the prefix but not the reserved ``PREFIX/_...``
        (replica and proxy records, thousands of them, churning): two Ranges
        around them, the second at the first's revision."""
        prefix = self._key_prefix
        reserved = prefix + RESERVED.encode()
        limit = self.max_keys + 1
        below = self.client.range(rpc_pb2.RangeRequest(key=prefix, range_end=reserved, limit=limit))
        revision = below.header.revision
        above = self.client.range(
            rpc_pb2.RangeRequest(
                key=range_end(reserved), range_end=range_end(prefix), limit=limit, revision=revision
            )
        )
        return (*below.kvs, *above.kvs), below.more or above.more, revision

    def read(self) -> StoreContents:
        listing = self.list()
        self.revision = max(self.revision, listing.revision)
        texts = tuple(load_texts_of(o for o, _ in listing.objects.values()))
        return StoreContents(texts, listing.problems, listing.revision)

    def commit(
        self,
        puts: Sequence[StoredObject],
        deletes: Sequence[str],
        expected: dict[str, int],
    ) -> int:
        """Write ``puts`` and delete the objects at ``deletes`` (KIND/NS/NAME)
        in ONE transaction, if every key in ``expected`` still has that
        mod_revision (0: absent). Returns the new revision; StoreError when
        the store changed meanwhile."""
        prefix = self.url.prefix
        compare = [
            rpc_pb2.Compare(
                key=f"{prefix}/{path}".encode(),
                target=rpc_pb2.Compare.MOD,
                result=rpc_pb2.Compare.EQUAL,
                mod_revision=revision,
            )
            for path, revision in sorted(expected.items())
        ]
        operations = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=o.key(prefix), value=o.encode()))
            for o in puts
        ]
        operations += [
            rpc_pb2.RequestOp(
                request_delete_range=rpc_pb2.DeleteRangeRequest(key=f"{prefix}/{path}".encode())
            )
            for path in deletes
        ]
        response = self.client.txn(rpc_pb2.TxnRequest(compare=compare, success=operations))
        if not response.succeeded:
            raise StoreError("the store changed while this command ran; run it again")
        return response.header.revision

    def _reserved(self, key: bytes) -> bool:
        """A replica's or proxy's record (``PREFIX/_...``): not configuration."""
        return key[len(self._key_prefix) :].startswith(RESERVED.encode())

    def start(self) -> None:
        """Nothing to do before :meth:`changes` (the watch opens there)."""

    async def changes(self) -> AsyncGenerator[Change, None]:
        retry, index, broken = _RETRY_FIRST, 0, False
        count = len(self.url.endpoints)
        while True:
            start = max(self._watched, self.revision) + 1
            request = rpc_pb2.WatchCreateRequest(
                key=self._key_prefix, range_end=range_end(self._key_prefix), start_revision=start
            )
            compacted = 0
            try:
                async for response in self.client.watch(index, request):
                    if broken:  # back: whatever happened meanwhile, read it all
                        broken, retry = False, _RETRY_FIRST
                        log.info("etcd watch resumed at revision %d", start)
                        yield Change(time.monotonic(), "reconnected", start)
                    if response.compact_revision:
                        log.warning(
                            "etcd compacted revision %d away (now at %d): re-listing",
                            start,
                            response.compact_revision,
                        )
                        self._watched, compacted = 0, response.compact_revision
                        yield Change(time.monotonic(), "compacted", response.compact_revision)
                        break
                    if response.canceled:
                        break
                    if response.events:
                        self._watched = max(e.kv.mod_revision for e in response.events)
                        if any(not self._reserved(e.kv.key) for e in response.events):
                            yield Change(time.monotonic(), "changed", self._watched)
            except grpc.aio.AioRpcError as exc:
                self._problem = f"etcd watch broke on {self.client.names}: {exc.code().name}"
                log.warning("etcd watch broke (%s): %s", exc.code().name, exc.details())
            if compacted and self.revision >= compacted:
                continue  # re-listed by the consumer: watch from its revision
            broken = True
            index = (index + 1) % count
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX)

    def stop(self) -> None:
        self.client.close()
