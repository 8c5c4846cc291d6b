"""Immutable per-proxy snapshots, encoded once.

A :class:`TypeResources` holds one type's resources already serialised as the
bytes of a ``DiscoveryResponse.resources`` entry, and a version derived from
those bytes. For delta xDS each resource also has its own version (a hash of
its chunk) and a pre-encoded ``DeltaDiscoveryResponse.resources`` entry
(``Resource{version, name, resource}``); both are made at most once per
resource per :class:`TypeResources` and shared by every stream.

Responses are assembled by concatenating pre-encoded chunks: protobuf fields
may appear in any order and repeated fields concatenate, so
``header + chunks + nonce`` is a valid ``DiscoveryResponse``. Nothing is
re-serialised per stream; the only per-stream bytes are the nonce.

Sharing is structural: a proxy's clusters are the mesh's shared clusters
*layered* under its own few (:func:`merge_types`), a view that copies
nothing, so 2,000 proxies of a 6,000-cluster mesh hold one cluster table,
not 2,000. Protobuf messages are not kept at all: the bytes are the
resources, and :attr:`TypeResources.messages` decodes them on demand (debug
and tests only).
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from sailplane.xds import references
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, type_url_of
from sailplane.xds.wire import varint

_V = TypeVar("_V")
_RESOURCES_FIELD_TAG = b"\x12"  # DiscoveryResponse.resources: field 2, length-delimited
# Resource.version (1) and Resource.name (3), both strings. Resource.resource is
# field 2, an Any: the same tag as DiscoveryResponse.resources, so a SotW chunk
# *is* the encoded `resource` field of a delta Resource.
_VERSION_TAG, _NAME_TAG = b"\x0a", b"\x1a"

_MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
}


def _payload(chunk: bytes) -> bytes:
    """The Any inside a ``resources`` chunk (tag, varint length, payload)."""
    start = 1
    while chunk[start] & 0x80:
        start += 1
    return chunk[start + 1 :]


def _chunk(type_url: str, value: bytes) -> bytes:
    """``resources`` entry: the Any ``{type_url, value}``, as its serialiser
    writes it (field 1, then field 2, omitted when empty), without building it."""
    type_field = _TYPE_URL_FIELDS.get(type_url)
    if type_field is None:
        encoded = type_url.encode()
        type_field = _TYPE_URL_FIELDS[type_url] = b"\x0a" + varint(len(encoded)) + encoded
    value_field = b"\x12" + varint(len(value)) if value else b""
    size = len(type_field) + len(value_field) + len(value)
    return b"".join([_RESOURCES_FIELD_TAG, varint(size), type_field, value_field, value])


_TYPE_URL_FIELDS: dict[str, bytes] = {}


def _content_version(chunks: Mapping[str, bytes]) -> str:
    """A hash of names and bytes in name order: equal content, equal version,
    however the resources were produced."""
    digest = hashlib.sha256()
    for name in sorted(chunks):
        digest.update(name.encode() + b"\0")
        digest.update(_payload(chunks[name]))
    return digest.hexdigest()[:16]


def encode_nonce(nonce: str) -> bytes:
    encoded: bytes = discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString()
    return encoded


class _Decoded(Mapping[str, Message]):
    """name -> message, decoded from the chunks on access, in name order."""

    def __init__(self, type_url: str, chunks: Mapping[str, bytes]) -> None:
        self._type = _MESSAGE_TYPES.get(type_url)
        self._type_url = type_url
        self._chunks = chunks

    def __getitem__(self, name: str) -> Message:
        packed = any_pb2.Any.FromString(_payload(self._chunks[name]))
        if self._type is None:
            return packed
        return self._type.FromString(packed.value)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._chunks))

    def __len__(self) -> int:
        return len(self._chunks)


class TypeResources:
    """One type's resources for one snapshot; shareable between proxies.

    ``chunks``: name -> encoded ``resources`` entry (an ``Any``). Immutable
    by convention: every stream that sent it may still hold it.
    """

    __slots__ = ("__dict__", "_delta", "_versions", "chunks", "type_url", "version")

    def __init__(self, type_url: str, version: str, chunks: Mapping[str, bytes]) -> None:
        self.type_url = type_url
        self.version = version
        self.chunks = chunks
        # Delta xDS, filled lazily: name -> per-resource version / encoded Resource entry.
        self._versions: dict[str, str] = {}
        self._delta: dict[str, bytes] = {}

    def __repr__(self) -> str:
        kind = self.type_url.rsplit(".", 1)[-1]
        return f"TypeResources({kind}, {self.version}, {len(self.chunks)} resources)"

    @classmethod
    def build(cls, type_url: str, messages: Iterable[tuple[str, Message]]) -> TypeResources:
        return cls.from_values(
            type_url, ((name, m.SerializeToString(deterministic=True)) for name, m in messages)
        )

    @classmethod
    def from_values(cls, type_url: str, values: Iterable[tuple[str, bytes]]) -> TypeResources:
        """From resources already serialised (each the bytes of one message)."""
        chunks = {name: _chunk(type_url, value) for name, value in sorted(values)}
        return cls(type_url, _content_version(chunks), chunks)

    @classmethod
    def of(cls, messages: Iterable[Message], name_field: str = "name") -> TypeResources:
        items = [(getattr(m, name_field), m) for m in messages]
        if not items:
            raise ValueError("use TypeResources.build(type_url, []) for an empty type")
        type_url = type_url_of(items[0][1].DESCRIPTOR.full_name)
        return cls.build(type_url, items)

    @property
    def messages(self) -> Mapping[str, Message]:
        """The resources decoded, in name order (debug output and tests)."""
        return _Decoded(self.type_url, self.chunks)

    def resource_version(self, name: str) -> str | None:
        """The version of one resource (delta xDS), None if absent."""
        found = self._versions.get(name)
        if found is None:
            chunk = self.chunks.get(name)
            if chunk is None:
                return None
            found = self._versions[name] = hashlib.sha256(chunk).hexdigest()[:12]
        return found

    def delta_chunk(self, name: str) -> bytes:
        """``DeltaDiscoveryResponse.resources`` entry for ``name``, encoded once."""
        found = self._delta.get(name)
        if found is None:
            version = self.resource_version(name)
            assert version is not None, name
            encoded_name = name.encode()
            resource = b"".join(
                [
                    _VERSION_TAG,
                    varint(len(version)),
                    version.encode(),
                    _NAME_TAG,
                    varint(len(encoded_name)),
                    encoded_name,
                    self.chunks[name],
                ]
            )
            found = self._delta[name] = _RESOURCES_FIELD_TAG + varint(len(resource)) + resource
        return found

    def delta_all(self, names: frozenset[str] | None) -> tuple[list[str], list[bytes]]:
        """Every resource (or every one in ``names``) as delta entries: their
        names and bytes (in shared pieces), what a client that has nothing is sent.
        Remembered for the last ``names`` object, which the streams of one
        configuration share, so 2,000 delta streams connecting cost one."""
        last = self.__dict__.get("_delta_all")
        if last is not None and last[0] is names:
            return last[1], last[2]
        chunks = self.chunks
        sent = sorted(chunks) if names is None else sorted(n for n in names if n in chunks)
        body = [b"".join([self.delta_chunk(n) for n in sent])]
        self.__dict__["_delta_all"] = (names, sent, body)
        return sent, body

    def parts(self) -> tuple[TypeResources, ...]:
        """The shared objects this one is made of (itself, unless layered)."""
        return (self,)

    def replace(self, changed: TypeResources, removed: Iterable[str] = ()) -> TypeResources:
        """This with ``changed``'s resources put in and ``removed`` taken out;
        every other resource keeps its bytes (incremental translation).
        Returns ``self`` when the content does not move, so an unchanged type
        keeps its version and nothing is pushed."""
        chunks = self.chunks
        gone = [n for n in removed if n in chunks and n not in changed.chunks]
        moved = {n: c for n, c in changed.chunks.items() if chunks.get(n) != c}
        if not gone and not moved:
            return self
        merged = dict(chunks)
        for name in gone:
            del merged[name]
        merged.update(moved)
        if any(n not in chunks for n in moved):
            merged = dict(sorted(merged.items()))
        result = TypeResources(self.type_url, _content_version(merged), merged)
        # Unchanged resources keep their delta encoding: nothing is hashed twice.
        for name, value in self._versions.items():
            if name in merged and name not in moved:
                result._versions[name] = value
                if name in self._delta:
                    result._delta[name] = self._delta[name]
        return result

    def subset(self, names: Iterable[str], salt: str) -> TypeResources:
        """Only ``names`` (those present), sharing their bytes; the version is
        derived from this one's and ``salt`` (what chose the names)."""
        chunks = {n: self.chunks[n] for n in sorted(names) if n in self.chunks}
        digest = hashlib.sha256(f"{self.version}|{salt}".encode()).hexdigest()[:16]
        return TypeResources(self.type_url, digest, chunks)

    @cached_property
    def joined(self) -> bytes:
        """Every chunk, concatenated: the resources of a full response."""
        return b"".join(self.chunks.values())

    def header(self, version: str) -> bytes:
        encoded: bytes = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=self.type_url
        ).SerializeToString()
        return encoded

    def body_parts(self, names: Iterable[str] | None) -> list[bytes]:
        """The response without its nonce, as shared pieces (nothing copied):
        all resources, or only ``names``."""
        if names is None or self._covered_by(names):
            return [self.header(self.version), self.joined]
        return [self.header(self.version), *self._selected(names)]

    def _covered_by(self, names: Iterable[str]) -> bool:
        """Whether ``names`` takes in every resource (every sidecar asks EDS
        for every cluster): then the shared joined bytes serve. Remembered for
        the last names object, which streams share (see requests.intern_names),
        weakly: what a stream subscribed goes when the stream does."""
        last = self.__dict__.get("_covering")
        if last is not None and last[0]() is names:
            return bool(last[1])
        wanted = names if isinstance(names, set | frozenset) else set(names)
        covered = len(wanted) >= len(self.chunks) and self.chunks.keys() <= wanted
        with contextlib.suppress(TypeError):  # not weakly referable: not remembered
            self.__dict__["_covering"] = (weakref.ref(names), covered)
        return covered

    def body(self, names: Iterable[str] | None = None) -> bytes:
        """The response without its nonce: all resources, or only ``names``."""
        return b"".join(self.body_parts(names))

    def _selected(self, names: Iterable[str]) -> list[bytes]:
        wanted = names if isinstance(names, set | frozenset) else set(names)
        chunks = self.chunks
        if len(wanted) * 4 < len(chunks):
            return [chunks[n] for n in sorted(wanted) if n in chunks]
        return [chunk for name, chunk in chunks.items() if name in wanted]


class _Layered(Mapping[str, bytes]):
    """``top`` over ``bottom`` without copying either (``top`` is small)."""

    __slots__ = ("_bottom", "_len", "_top")

    def __init__(self, top: Mapping[str, bytes], bottom: Mapping[str, bytes]) -> None:
        self._top = top
        self._bottom = bottom
        self._len = len(bottom) + sum(1 for n in top if n not in bottom)

    def __getitem__(self, name: str) -> bytes:
        found = self._top.get(name)
        return self._bottom[name] if found is None else found

    def __contains__(self, name: object) -> bool:
        return name in self._top or name in self._bottom

    def __iter__(self) -> Iterator[str]:
        yield from self._top
        top = self._top
        yield from (n for n in self._bottom if n not in top)

    def __len__(self) -> int:
        return self._len

    @property
    def overlaps(self) -> bool:
        return self._len != len(self._top) + len(self._bottom)


class LayeredTypeResources(TypeResources):
    """A proxy's own resources over the ones it shares (see :func:`merge_types`).

    Per-resource versions and delta entries live in the shared parts, so
    they are computed once for the mesh, not once per proxy; a full response
    is the proxy's few chunks plus the shared part's pre-joined bytes."""

    __slots__ = ("_base", "_extra", "_layered")

    def __init__(self, base: TypeResources, extra: TypeResources, version: str) -> None:
        self._layered = _Layered(extra.chunks, base.chunks)
        super().__init__(base.type_url, version, self._layered)
        self._base = base
        self._extra = extra

    def parts(self) -> tuple[TypeResources, ...]:
        return (self._extra, self._base)

    def _source(self, name: str) -> TypeResources:
        return self._extra if name in self._extra.chunks else self._base

    def resource_version(self, name: str) -> str | None:
        if name not in self.chunks:
            return None
        return self._source(name).resource_version(name)

    def delta_chunk(self, name: str) -> bytes:
        return self._source(name).delta_chunk(name)

    def delta_all(self, names: frozenset[str] | None) -> tuple[list[str], list[bytes]]:
        if names is not None or self._layered.overlaps:
            return super().delta_all(names)
        own, own_body = self._extra.delta_all(None)
        shared, shared_body = self._base.delta_all(None)
        return own + shared, own_body + shared_body

    def body_parts(self, names: Iterable[str] | None) -> list[bytes]:
        if names is not None:
            return super().body_parts(names)
        header = self.header(self.version)
        if self._layered.overlaps:
            return [header, *self.chunks.values()]
        return [header, self._extra.joined, self._base.joined]

    @property
    def joined(self) -> bytes:
        """Not kept: only this proxy sends it, so it is joined per response."""
        return b"".join(self.chunks.values())


class Snapshot:
    """Everything one proxy should have, by type URL. Immutable.

    ``withheld``: types this proxy may not have at all, with the reason
    (secrets on the plaintext port). A stream that subscribes to one gets no
    response for it, and the reason in its status and the log."""

    __slots__ = ("resources", "withheld")

    def __init__(
        self, resources: Mapping[str, TypeResources], withheld: Mapping[str, str] | None = None
    ) -> None:
        self.resources = resources
        self.withheld: Mapping[str, str] = withheld or {}

    def version(self, type_url: str) -> str:
        found = self.resources.get(type_url)
        return found.version if found is not None else ""

    def get(self, type_url: str) -> TypeResources:
        found = self.resources.get(type_url)
        return found if found is not None else _empty(type_url)

    def consistent(self) -> list[str]:
        """Dangling references: every EDS service name a cluster uses, every RDS
        name a listener uses and every SDS secret either refers to must be in the
        snapshot. Returns one message per dangling reference; empty = consistent."""
        problems = []
        clusters = list(self.get(CLUSTER).messages.values())
        listeners = list(self.get(LISTENER).messages.values())
        wanted = {
            ENDPOINT: ("cluster", references.eds_names(clusters)),
            ROUTE: ("listener", references.rds_names(listeners)),
            SECRET: ("listener or cluster", references.sds_names([*listeners, *clusters])),
        }
        for type_url, (owner, names) in wanted.items():
            present = self.get(type_url).chunks
            for name in sorted(names - present.keys()):
                problems.append(f"{owner} refers to missing {type_url.rsplit('.', 1)[-1]} {name!r}")
        return problems


_EMPTY: dict[str, TypeResources] = {}


def _empty(type_url: str) -> TypeResources:
    if type_url not in _EMPTY:
        _EMPTY[type_url] = TypeResources.build(type_url, [])
    return _EMPTY[type_url]


def merge_types(base: TypeResources, extra: TypeResources) -> TypeResources:
    """``base`` plus ``extra`` without re-encoding or copying either: how a
    proxy's own resources join the ones it shares with the rest of the mesh."""
    if not extra.chunks:
        return base
    if not base.chunks:
        return extra
    version = hashlib.sha256(f"{base.version}+{extra.version}".encode()).hexdigest()[:16]
    return LayeredTypeResources(base, extra, version)


# (id(old), id(new)) -> (old, new, names that differ). The objects are kept
# alive with the entry so an id is never reused while its entry exists.
_DIFFS: dict[tuple[int, int], tuple[TypeResources, TypeResources, frozenset[str]]] = {}


def _diff_single(old: TypeResources, new: TypeResources) -> frozenset[str]:
    if old is new:
        return frozenset()
    key = (id(old), id(new))
    found = _DIFFS.get(key)
    if found is not None:
        return found[2]
    a, b = old.chunks, new.chunks
    names = frozenset(
        n for n in a.keys() | b.keys() if (x := a.get(n)) is not (y := b.get(n)) and x != y
    )
    if len(_DIFFS) > 256:
        _DIFFS.clear()
    _DIFFS[key] = (old, new, names)
    return names


def changed_names(old: TypeResources, new: TypeResources) -> frozenset[str]:
    """Names added, changed or removed between ``old`` and ``new``; computed
    once per pair of shared objects, whichever stream asks first, so a push
    to 2,000 streams costs one comparison, not 2,000."""
    old_parts, new_parts = old.parts(), new.parts()
    if len(old_parts) == len(new_parts) > 1:
        out: frozenset[str] = frozenset()
        for a, b in zip(old_parts, new_parts, strict=True):
            out |= _diff_single(a, b)
        return out
    return _diff_single(old, new)


def removed_names(old: TypeResources, new: TypeResources) -> list[str]:
    """Names ``old`` has and ``new`` does not."""
    if old is new:
        return []
    return [n for n in changed_names(old, new) if n not in new.chunks]


__all__ = [
    "LayeredTypeResources",
    "Snapshot",
    "TypeResources",
    "changed_names",
    "encode_nonce",
    "merge_types",
    "removed_names",
]
