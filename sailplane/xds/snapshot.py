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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from sailplane.xds import references
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, type_url_of

_V = TypeVar("_V")
_RESOURCES_FIELD_TAG = b"\x12"  # DiscoveryResponse.resources: field 2, length-delimited
# Resource.version (1) and Resource.name (3), both strings. Resource.resource is
# field 2, an Any: the same tag as DiscoveryResponse.resources, so a SotW chunk
# *is* the encoded `resource` field of a delta Resource.
_VERSION_TAG, _NAME_TAG = b"\x0a", b"\x1a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _payload(chunk: bytes) -> bytes:
    """The Any inside a ``resources`` chunk (tag, varint length, payload)."""
    start = 1
    while chunk[start] & 0x80:
        start += 1
    return chunk[start + 1 :]


def encode_nonce(nonce: str) -> bytes:
    encoded: bytes = discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString()
    return encoded


@dataclass(frozen=True, eq=False)
class TypeResources:
    """One type's resources for one snapshot; shareable between proxies."""

    type_url: str
    version: str
    # name -> encoded `resources` entry (an Any), in name order (responses rely on it)
    chunks: Mapping[str, bytes]
    messages: Mapping[str, Message] = field(repr=False)
    # Delta xDS, filled lazily: name -> per-resource version / encoded Resource entry.
    _versions: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _delta: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def build(cls, type_url: str, messages: Iterable[tuple[str, Message]]) -> TypeResources:
        chunks: dict[str, bytes] = {}
        kept: dict[str, Message] = {}
        digest = hashlib.sha256()
        for name, message in sorted(messages, key=lambda item: item[0]):
            value = message.SerializeToString(deterministic=True)
            packed = any_pb2.Any(type_url=type_url, value=value).SerializeToString()
            chunks[name] = _RESOURCES_FIELD_TAG + _varint(len(packed)) + packed
            kept[name] = message
            digest.update(name.encode() + b"\0")
            digest.update(packed)
        return cls(type_url, digest.hexdigest()[:16], chunks, kept)

    @classmethod
    def of(cls, messages: Iterable[Message], name_field: str = "name") -> TypeResources:
        items = [(getattr(m, name_field), m) for m in messages]
        if not items:
            raise ValueError("use TypeResources.build(type_url, []) for an empty type")
        type_url = type_url_of(items[0][1].DESCRIPTOR.full_name)
        return cls.build(type_url, items)

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
            resource = (
                _VERSION_TAG
                + _varint(len(version))
                + version.encode()
                + _NAME_TAG
                + _varint(len(encoded_name))
                + encoded_name
                + self.chunks[name]
            )
            found = self._delta[name] = _RESOURCES_FIELD_TAG + _varint(len(resource)) + resource
        return found

    def parts(self) -> tuple[TypeResources, ...]:
        """The shared objects this one is made of (itself, unless merged)."""
        return (self,)

    def replace(
        self, updated: Iterable[tuple[str, Message]], removed: Iterable[str] = ()
    ) -> TypeResources:
        """A new version with ``updated`` (re)encoded and ``removed`` dropped;
        every other resource keeps its bytes (incremental translation)."""
        changed = TypeResources.build(self.type_url, updated)
        gone = set(removed)
        chunks = {n: c for n, c in self.chunks.items() if n not in gone}
        messages = {n: m for n, m in self.messages.items() if n not in gone}
        chunks = _merge_sorted(chunks, changed.chunks)
        messages = _merge_sorted(messages, changed.messages)
        digest = hashlib.sha256()
        for name, chunk in chunks.items():
            digest.update(name.encode() + b"\0")
            digest.update(_payload(chunk))
        result = TypeResources(self.type_url, digest.hexdigest()[:16], chunks, messages)
        # Unchanged resources keep their delta encoding: nothing is hashed twice.
        for name, value in self._versions.items():
            if name in chunks and chunks[name] is self.chunks.get(name):
                result._versions[name] = value
                if name in self._delta:
                    result._delta[name] = self._delta[name]
        return result

    @cached_property
    def _full_body(self) -> bytes:
        return self.header(self.version) + b"".join(self.chunks.values())

    def header(self, version: str) -> bytes:
        encoded: bytes = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=self.type_url
        ).SerializeToString()
        return encoded

    def message(self, names: Iterable[str] | None, nonce: bytes) -> bytes:
        """The whole response, nonce included, in as few copies as possible:
        at cold start every stream holds its response until gRPC has sent it,
        so each extra copy of a 1 MB body is 1 GB across 1,000 proxies."""
        return self.body(names) + nonce

    def body(self, names: Iterable[str] | None = None) -> bytes:
        """The response without its nonce: all resources, or only ``names``."""
        if names is None:
            return self._full_body
        wanted = names if isinstance(names, set | frozenset) else set(names)
        chunks = self.chunks
        if len(wanted) >= len(chunks) and chunks.keys() <= wanted:
            return self.body()  # every resource: streams with equal subscriptions share it
        if len(wanted) * 4 < len(chunks):
            selected = [chunks[n] for n in sorted(wanted) if n in chunks]
        else:  # chunks are in name order: one pass beats sorting the names
            selected = [chunk for name, chunk in chunks.items() if name in wanted]
        return self.header(self.version) + b"".join(selected)


class _MergedTypeResources(TypeResources):
    """A proxy's shared resources plus its own (see :func:`merge_types`). Only
    that proxy's streams send it, so its full body is joined per response
    rather than kept for the snapshot's lifetime: kept, it would cost the
    whole type's size (~350 KB at 2,000 clusters) for every proxy."""

    _sources: tuple[TypeResources, TypeResources] = (None, None)  # type: ignore[assignment]

    def body(self, names: Iterable[str] | None = None) -> bytes:
        if names is None:
            return b"".join([self.header(self.version), *self.chunks.values()])
        return super().body(names)

    def message(self, names: Iterable[str] | None, nonce: bytes) -> bytes:
        if names is None:  # one join, not a join and then a concatenation
            return b"".join([self.header(self.version), *self.chunks.values(), nonce])
        return super().message(names, nonce)

    def parts(self) -> tuple[TypeResources, ...]:
        return self._sources

    def _source(self, name: str) -> TypeResources:
        extra, base = self._sources
        return extra if name in extra.chunks else base

    # Per-resource versions and delta entries live in the shared parts, so
    # they are computed once for the mesh, not once per proxy.
    def resource_version(self, name: str) -> str | None:
        if name not in self.chunks:
            return None
        return self._source(name).resource_version(name)

    def delta_chunk(self, name: str) -> bytes:
        return self._source(name).delta_chunk(name)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything one proxy should have, by type URL. Immutable."""

    resources: Mapping[str, TypeResources]

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
        wanted = {
            ENDPOINT: ("cluster", references.eds_names(self.get(CLUSTER).messages.values())),
            ROUTE: ("listener", references.rds_names(self.get(LISTENER).messages.values())),
            SECRET: (
                "listener or cluster",
                references.sds_names(
                    [*self.get(LISTENER).messages.values(), *self.get(CLUSTER).messages.values()]
                ),
            ),
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
    """``base`` plus ``extra`` without re-encoding either: how a proxy's own
    resources join the ones it shares with the rest of the mesh."""
    if not extra.chunks:
        return base
    if not base.chunks:
        return extra
    chunks = _merge_sorted(base.chunks, extra.chunks)
    messages = _merge_sorted(base.messages, extra.messages)
    version = hashlib.sha256(f"{base.version}+{extra.version}".encode()).hexdigest()[:16]
    merged = _MergedTypeResources(base.type_url, version, chunks, messages)
    object.__setattr__(merged, "_sources", (extra, base))
    return merged


def _merge_sorted(base: Mapping[str, _V], extra: Mapping[str, _V]) -> dict[str, _V]:
    """Two name-ordered mappings as one, in name order; ``extra`` wins on a
    shared name. A proxy's own resources usually all sort before or after the
    shared ones (``inbound|`` < ``outbound|``): then no sort is needed, which
    matters at thousands of shared resources times thousands of proxies."""
    if isinstance(base, dict) and base and extra:
        if max(extra) < next(iter(base)):
            return {**extra, **base}
        if min(extra) > next(reversed(base)):
            return {**base, **extra}
    return dict(sorted({**base, **extra}.items()))


__all__ = ["Snapshot", "TypeResources", "encode_nonce", "merge_types"]
