"""One type's resources, encoded once and shared: :class:`TypeResources`.

It holds one type's resources already serialised as the bytes of a
``DiscoveryResponse.resources`` entry (see encoding.py), and a version
derived from those bytes. For delta xDS each resource also has its own
version (a hash of its chunk) and a pre-encoded
``DeltaDiscoveryResponse.resources`` entry; both are made at most once per
resource per :class:`TypeResources` and shared by every stream. Nothing is
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

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from sailplane.xds.encoding import chunk, content_version, delta_entry, payload, resource_version
from sailplane.xds.references import References
from sailplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    SHORT_NAMES,
    VIRTUAL_HOST,
    type_url_of,
)

_MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
    VIRTUAL_HOST: route_components_pb2.VirtualHost,
}


class _Decoded(Mapping[str, Message]):
    """name -> message, decoded from the chunks on access, in name order."""

    def __init__(self, type_url: str, chunks: Mapping[str, bytes]) -> None:
        self._type = _MESSAGE_TYPES.get(type_url)
        self._type_url = type_url
        self._chunks = chunks

    def __getitem__(self, name: str) -> Message:
        packed = any_pb2.Any.FromString(payload(self._chunks[name]))
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
    ``vhds``: route configs that delta streams may be served over VHDS
    (split into VirtualHost resources, see vhds.py).
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "_delta",
        "_versions",
        "chunks",
        "type_url",
        "version",
        "vhds",
    )

    def __init__(
        self, type_url: str, version: str, chunks: Mapping[str, bytes], vhds: bool = False
    ) -> None:
        self.type_url = type_url
        self.version = version
        self.chunks = chunks
        self.vhds = vhds
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
    def from_values(
        cls, type_url: str, values: Iterable[tuple[str, bytes]], vhds: bool = False
    ) -> TypeResources:
        """From resources already serialised (each the bytes of one message)."""
        chunks = {name: chunk(type_url, value) for name, value in sorted(values)}
        return cls(type_url, content_version(chunks), chunks, vhds)

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
            encoded = self.chunks.get(name)
            if encoded is None:
                return None
            found = self._versions[name] = resource_version(encoded)
        return found

    def delta_chunk(self, name: str) -> bytes:
        """``DeltaDiscoveryResponse.resources`` entry for ``name``, encoded once."""
        found = self._delta.get(name)
        if found is None:
            version = self.resource_version(name)
            assert version is not None, name
            found = self._delta[name] = delta_entry(name, version, self.chunks[name])
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
        result = TypeResources(self.type_url, content_version(merged), merged)
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
    def references(self) -> References:
        """What these resources refer to (consistency checks only: it decodes
        them all), found once per object."""
        return References.of(self.messages.values())

    @cached_property
    def _eds_names(self) -> dict[str, str | None]:
        return {}

    def eds_name(self, name: str) -> str | None:
        """The assignment the EDS cluster ``name`` asks for; None for any
        other cluster or resource. Decoded once per object, which proxies
        share, not once per stream that asks."""
        memo = self._eds_names
        if name not in memo:
            message = self.messages[name]
            is_eds = isinstance(message, cluster_pb2.Cluster) and (
                message.type == cluster_pb2.Cluster.EDS
            )
            memo[name] = (message.eds_cluster_config.service_name or name) if is_eds else None
        return memo[name]

    @cached_property
    def joined(self) -> bytes:
        """Every chunk, concatenated: the resources of a full response."""
        return b"".join(self.chunks.values())

    def header(self, version: str) -> bytes:
        """A response's version and type (its resources and nonce follow);
        at this object's own version, encoded once."""
        if version != self.version:
            return _header(version, self.type_url)
        found: bytes | None = self.__dict__.get("_header")
        if found is None:
            found = self.__dict__["_header"] = _header(version, self.type_url)
        return found

    def body_parts(self, names: Iterable[str] | None) -> list[bytes]:
        """The response without its nonce, as shared pieces (nothing copied):
        all resources, or only ``names``."""
        if names is None or self._covered_by(names):
            return [self.header(self.version), self.joined]
        return [self.header(self.version), *self._selected(names)]

    def _covered_by(self, names: Iterable[str]) -> bool:
        """Whether ``names`` takes in every resource (every sidecar asks EDS
        for every cluster): then the shared joined bytes serve. Remembered for
        the last names object, which streams share (see server/requests.py),
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


def _header(version: str, type_url: str) -> bytes:
    encoded: bytes = discovery_pb2.DiscoveryResponse(
        version_info=version, type_url=type_url
    ).SerializeToString()
    return encoded


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

    def eds_name(self, name: str) -> str | None:
        return self._source(name).eds_name(name)

    def delta_all(self, names: frozenset[str] | None) -> tuple[list[str], list[bytes]]:
        if names is not None or self._layered.overlaps:
            # The shared parts' entries, not joined and not remembered here:
            # this object is one proxy's, and a joined copy kept on it (a
            # sidecar's 0.6 MB route table) would be kept per proxy.
            chunks = self.chunks
            sent = sorted(chunks) if names is None else sorted(n for n in names if n in chunks)
            return sent, [self.delta_chunk(n) for n in sent]
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

    @cached_property
    def references(self) -> References:
        """The parts' (each found once, the shared one once for the mesh),
        unless the proxy's own resources replace shared ones."""
        if self._layered.overlaps:
            return References.of(self.messages.values())
        return self._extra.references | self._base.references

    @property
    def joined(self) -> bytes:
        """Not kept: only this proxy sends it, so it is joined per response."""
        return b"".join(self.chunks.values())


def merge_types(base: TypeResources, extra: TypeResources) -> TypeResources:
    """``base`` plus ``extra`` without re-encoding or copying either: how a
    proxy's own resources join the ones it shares with the rest of the mesh."""
    if not extra.chunks:
        return base
    if not base.chunks:
        return extra
    version = hashlib.sha256(f"{base.version}+{extra.version}".encode()).hexdigest()[:16]
    return LayeredTypeResources(base, extra, version)


# One empty TypeResources per type sailplane serves, built once.
_EMPTY: Mapping[str, TypeResources] = {t: TypeResources.build(t, []) for t in SHORT_NAMES}


def empty(type_url: str) -> TypeResources:
    """No resources of ``type_url`` (shared for the types sailplane serves)."""
    found = _EMPTY.get(type_url)
    return found if found is not None else TypeResources.build(type_url, [])


__all__ = ["LayeredTypeResources", "TypeResources", "empty", "merge_types"]
