"""Reading state-of-the-world requests without rebuilding their name lists.

Envoy repeats a type's whole subscription in every request, ACKs included:
a sidecar of a 6,000-cluster mesh sends 6,000 EDS names with each EDS ACK,
and 2,000 sidecars do so after every endpoint change. Parsing such a request
is cheap (C); turning its names into a Python set is not (~0.5 ms). Most of
those lists are identical, so each distinct list of names becomes one shared
frozenset, found by the bytes that encode it.

The names are found without reading them, and without copying them: the
fields before them (version, node) are stepped over, and the fields after
them (type URL, nonce, error) begin with the encoded type URL, which is one
of five known strings, so a reverse search finds it. Delta requests get the
same (:func:`parse_delta_request`): ``resource_names_subscribe`` is field 3
too, so its encoding is the same bytes, after fields 1 and 2 (node, type
URL); Envoy writes nothing after a subscription's names, so they run to the
end of the request (2,000 delta proxies of 3,000 clusters each subscribe to
the same 3,000 names at a cold start). What lies between is
compared in place (``bytes.startswith`` at an offset: a memcmp) with the
encodings seen before, looked up by their length and last bytes. A request
whose middle was not seen before, or that does not have this shape (another
field order, unknown fields), is parsed whole, which is always right.

Why this is exact: a protobuf message is its fields in sequence, and parsing
is a left-to-right merge. The middle bytes are only ever taken as names when
they are byte for byte a middle that a full parse showed to be nothing but
complete ``resource_names`` fields; the fields before and after it are then
parsed from their own bytes.

What the sharing may hold (:class:`NameSets`): the sets themselves only
weakly (a set lives as long as a stream subscribes to it or a request
carries it; a closed stream's names go with it), and their encodings within
a byte budget, per entry and in all, so no client can make it keep much.
Only admitted streams parse through here (see ``first_node``): a refused
stream's first request is never parsed beyond its node.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from sailplane.errors import LimitExceeded
from sailplane.xds.types import SHORT_NAMES
from sailplane.xds.wire import read_varint, varint

_SHARED_BELOW = 8  # smaller subscriptions are cheap to build and not worth sharing


class _Shared(weakref.ref[frozenset[str]]):
    """A remembered set (weakly) and what finds it."""

    __slots__ = ("encoding", "encoding_key", "value_key")

    def __new__(
        cls,
        names: frozenset[str],
        callback: Callable[[_Shared], None],
        value_key: tuple[int, int],
    ) -> _Shared:
        return super().__new__(cls, names, callback)

    def __init__(
        self,
        names: frozenset[str],
        callback: Callable[[_Shared], None],
        value_key: tuple[int, int],
    ) -> None:
        # (weakref.ref.__init__ only checks what __new__ did)
        self.value_key = value_key
        self.encoding: bytes | None = None
        self.encoding_key: tuple[int, bytes] | None = None


class NameSets:
    """One object per distinct set of names, found by value or by the bytes
    that encode it. Least recently used entries are forgotten first
    (forgetting only costs sharing)."""

    def __init__(
        self,
        entries: int = 1024,
        entry_names: int = 100_000,
        entry_bytes: int = 8 * 1024 * 1024,
        total_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.max_entries = entries
        self.max_entry_names = entry_names  # larger sets are not shared
        self.max_entry_bytes = entry_bytes  # larger encodings are not remembered
        self.max_total_bytes = total_bytes  # encodings held, in all
        self._by_value: dict[tuple[int, int], _Shared] = {}
        self._by_encoding: dict[tuple[int, bytes], _Shared] = {}
        self.encoded_bytes = 0

    def __len__(self) -> int:
        return len(self._by_value)

    def intern(self, names: frozenset[str]) -> frozenset[str]:
        """The remembered set equal to ``names``, or ``names`` (remembered
        now if it is worth sharing)."""
        if len(names) < _SHARED_BELOW or len(names) > self.max_entry_names:
            return names
        key = (hash(names), len(names))
        entry = self._by_value.get(key)
        if entry is not None:
            found = entry()
            if found is not None and (found is names or found == names):
                self._by_value[key] = self._by_value.pop(key)  # recently used
                return found
            self._forget(entry)  # gone, or another set with that hash
        self._by_value[key] = _Shared(names, self._forget, key)
        while len(self._by_value) > self.max_entries:
            self._forget(next(iter(self._by_value.values())))
        return names

    def remember_encoding(
        self, names: frozenset[str], key: tuple[int, bytes], middle: bytes
    ) -> None:
        """``middle`` encodes exactly ``names`` (an interned set)."""
        entry = self._by_value.get((hash(names), len(names)))
        if entry is None or entry() is not names or len(middle) > self.max_entry_bytes:
            return
        self._drop_encoding(entry)
        old = self._by_encoding.pop(key, None)
        if old is not None:
            self._drop_encoding(old)
        entry.encoding, entry.encoding_key = middle, key
        self._by_encoding[key] = entry
        self.encoded_bytes += len(middle)
        while self.encoded_bytes > self.max_total_bytes:
            self._drop_encoding(next(iter(self._by_encoding.values())))

    def by_encoding(self, key: tuple[int, bytes]) -> tuple[bytes, frozenset[str]] | None:
        entry = self._by_encoding.get(key)
        if entry is None or entry.encoding is None:
            return None
        names = entry()
        if names is None:
            return None
        self._by_encoding[key] = self._by_encoding.pop(key)  # recently used
        return entry.encoding, names

    def clear(self) -> None:
        for entry in list(self._by_value.values()):
            self._forget(entry)

    def _forget(self, entry: _Shared) -> None:
        """Also the weak reference's callback: the set is gone."""
        self._drop_encoding(entry)
        if self._by_value.get(entry.value_key) is entry:
            del self._by_value[entry.value_key]

    def _drop_encoding(self, entry: _Shared) -> None:
        if entry.encoding is None:
            return
        if entry.encoding_key is not None and self._by_encoding.get(entry.encoding_key) is entry:
            del self._by_encoding[entry.encoding_key]
        self.encoded_bytes -= len(entry.encoding)
        entry.encoding = entry.encoding_key = None


SHARED = NameSets()


class SotwRequest:
    """A DiscoveryRequest, its resource names as a (shared) frozenset, and
    its size on the wire."""

    __slots__ = ("message", "names", "size")

    def __init__(
        self, message: discovery_pb2.DiscoveryRequest, names: frozenset[str], size: int
    ) -> None:
        self.message = message
        self.names = names
        self.size = size

    @property
    def node(self) -> object:
        return self.message.node


def intern_names(names: frozenset[str]) -> frozenset[str]:
    """One object per distinct set of names (streams compare them by identity)."""
    return SHARED.intern(names)


def check_names(count: int, limit: int, what: str = "resource names") -> None:
    if count > limit:
        raise LimitExceeded(f"{count:,} {what} in one request; at most {limit:,}")


def first_node(raw: bytes, node_field: int, parse: Callable[[bytes], object]) -> base_pb2.Node:
    """The node of a stream's first request, before the stream is admitted:
    read from its own bytes where Envoy puts it (first, or after the
    version), without parsing the rest; otherwise from a parse of the whole
    request (C, nothing kept). Nothing shared is touched either way."""
    pos = 0
    tag = node_field << 3 | 2
    try:
        if raw[:1] == b"\x0a" and node_field != 1:  # version_info first
            length, pos = read_varint(raw, 1)
            pos += length
        if raw[pos : pos + 1] == bytes([tag]):
            length, start = read_varint(raw, pos + 1)
            if start + length <= len(raw):
                return base_pb2.Node.FromString(raw[start : start + length])
    except (IndexError, DecodeError):
        pass
    node = base_pb2.Node()
    node.CopyFrom(parse(raw).node)  # type: ignore[attr-defined]  # not a view into the request
    return node


def parse_sotw_request(raw: bytes, max_names: int = 100_000) -> SotwRequest:
    """A request of StreamAggregatedResources (after the stream is admitted).
    Raises :class:`LimitExceeded` for more than ``max_names`` names."""
    found = _fast(raw)
    if found is not None:
        check_names(len(found.names), max_names)
        return found
    request = discovery_pb2.DiscoveryRequest.FromString(raw)
    check_names(len(request.resource_names), max_names)  # before building a set of them
    names = intern_names(frozenset(request.resource_names))
    bounds = _bounds(raw)
    if bounds is not None and not request.resource_locators:
        _remember(raw, *bounds, names)
    return SotwRequest(request, names, len(raw))


class DeltaRequest:
    """A DeltaDiscoveryRequest and its ``resource_names_subscribe`` as a
    (shared) frozenset."""

    __slots__ = ("message", "subscribe")

    def __init__(
        self, message: discovery_pb2.DeltaDiscoveryRequest, subscribe: frozenset[str]
    ) -> None:
        self.message = message
        self.subscribe = subscribe

    @property
    def type_url(self) -> str:
        type_url: str = self.message.type_url
        return type_url


def parse_delta_request(raw: bytes, max_names: int = 100_000) -> DeltaRequest:
    """A request of DeltaAggregatedResources (after the stream is admitted).
    Raises :class:`LimitExceeded` for more than ``max_names`` names
    subscribed, unsubscribed, or given initial versions."""
    # Small requests (ACKs) are parsed: that is cheap.
    start = _names_start(raw) if len(raw) >= 1024 else None
    if start is not None:
        known = _known(raw, start, len(raw))
        if known is not None:
            try:  # raw[:start] is whole fields 1 and 2, nothing else
                rest = discovery_pb2.DeltaDiscoveryRequest.FromString(raw[:start])
            except DecodeError:
                rest = None
            if rest is not None:
                check_names(len(known), max_names)
                return DeltaRequest(rest, known)
    request = discovery_pb2.DeltaDiscoveryRequest.FromString(raw)
    check_names(len(request.resource_names_subscribe), max_names)
    check_names(len(request.resource_names_unsubscribe), max_names)
    check_names(len(request.initial_resource_versions), max_names, "initial resource versions")
    names = intern_names(frozenset(request.resource_names_subscribe))
    if start is not None:
        _remember(raw, start, len(raw), names)
    return DeltaRequest(request, names)


def _remember(raw: bytes, start: int, end: int, names: frozenset[str]) -> None:
    """Remember ``raw[start:end]`` as the encoding of ``names`` (interned),
    if it is nothing but these names as field 3 (see the module's docstring)."""
    if len(names) < _SHARED_BELOW:
        return
    middle = raw[start:end]
    try:
        listed = discovery_pb2.DiscoveryRequest.FromString(middle).resource_names
    except DecodeError:
        return
    if len(listed) != len(names) or not names.issuperset(listed):
        return  # other names too, or some twice
    # Nothing else either: the bytes are these names' own encoding.
    if discovery_pb2.DiscoveryRequest(resource_names=listed).SerializeToString() == middle:
        SHARED.remember_encoding(names, _key(raw, start, end), middle)


_TYPE_URL_FIELD = 4
_TRAILERS = [varint(_TYPE_URL_FIELD << 3 | 2) + varint(len(t)) + t.encode() for t in SHORT_NAMES]
_TRAILER_WINDOW = 4096


def _names_start(raw: bytes) -> int | None:
    """Where field 3 begins, after any fields 1 and 2 (SotW: version_info and
    node; delta: node and type_url). None if something else comes first."""
    pos, size = 0, len(raw)
    try:
        while pos < size and raw[pos] in (0x0A, 0x12):
            length, pos = read_varint(raw, pos + 1)
            pos += length
    except IndexError:
        return None
    if pos >= size or raw[pos] != 0x1A:  # resource_names, resource_names_subscribe
        return None
    return pos


def _bounds(raw: bytes) -> tuple[int, int] | None:
    """Where the names of a SotW request shaped as Envoy writes it lie: after
    fields 1 and 2, before the type URL. None if it is not so shaped."""
    pos = _names_start(raw)
    if pos is None:
        return None
    size = len(raw)
    # The trailing fields are short (a NACK's message may make them longer:
    # such a request takes the slow path); search only the end of the request.
    window = max(pos, size - _TRAILER_WINDOW)
    for trailer in _TRAILERS:
        end = raw.rfind(trailer, window)
        if end > pos:
            return pos, end
    return None


def _key(raw: bytes, start: int, end: int) -> tuple[int, bytes]:
    """The encoding's length and last bytes: enough to tell most apart
    before comparing the whole."""
    return end - start, raw[max(start, end - 32) : end]


def _known(raw: bytes, start: int, end: int) -> frozenset[str] | None:
    """The shared names that ``raw[start:end]`` is, byte for byte, the
    remembered encoding of; None if it is not one."""
    known = SHARED.by_encoding(_key(raw, start, end))
    if known is None or not raw.startswith(known[0], start):
        return None
    return known[1]


def _fast(raw: bytes) -> SotwRequest | None:
    if len(raw) < 1024:  # small requests: parsing is cheap
        return None
    bounds = _bounds(raw)
    if bounds is None:
        return None
    start, end = bounds
    known = _known(raw, start, end)
    if known is None:
        return None
    try:
        rest = discovery_pb2.DiscoveryRequest.FromString(raw[:start] + raw[end:])
    except DecodeError:
        return None
    if rest.resource_names or rest.resource_locators:
        return None
    return SotwRequest(rest, known, len(raw))
