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
of five known strings, so a reverse search finds it. What lies between is
compared in place (``bytes.startswith`` at an offset: a memcmp) with the
encodings seen before, looked up by their length and last bytes. A request
whose middle was not seen before, or that does not have this shape (another
field order, unknown fields), is parsed whole, which is always right.

Why this is exact: a protobuf message is its fields in sequence, and parsing
is a left-to-right merge. The middle bytes are only ever taken as names when
they are byte for byte a middle that a full parse showed to be nothing but
complete ``resource_names`` fields; the fields before and after it are then
parsed from their own bytes.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from sailplane.xds.types import SHORT_NAMES
from sailplane.xds.wire import read_varint, varint

_SHARED_BELOW = 8  # smaller subscriptions are cheap to build and not worth sharing
_BY_VALUE: dict[frozenset[str], frozenset[str]] = {}
_LIMIT = 256  # distinct subscriptions remembered (forgetting only costs sharing)


class SotwRequest:
    """A DiscoveryRequest and its resource names as a (shared) frozenset."""

    __slots__ = ("message", "names")

    def __init__(self, message: discovery_pb2.DiscoveryRequest, names: frozenset[str]) -> None:
        self.message = message
        self.names = names

    @property
    def node(self) -> object:
        return self.message.node


def intern_names(names: frozenset[str]) -> frozenset[str]:
    """One object per distinct set of names (streams compare them by identity)."""
    if len(names) < _SHARED_BELOW:
        return names
    found = _BY_VALUE.get(names)
    if found is None:
        if len(_BY_VALUE) > _LIMIT:
            _BY_VALUE.clear()
        _BY_VALUE[names] = found = names
    return found


def parse_sotw_request(raw: bytes) -> SotwRequest:
    """The gRPC request deserialiser of StreamAggregatedResources."""
    found = _fast(raw)
    if found is not None:
        return found
    request = discovery_pb2.DiscoveryRequest.FromString(raw)
    names = intern_names(frozenset(request.resource_names))
    bounds = _bounds(raw)
    if bounds is None or len(names) < _SHARED_BELOW or request.resource_locators:
        return SotwRequest(request, names)
    middle = raw[bounds[0] : bounds[1]]
    # Remembered only if it is nothing but these names (see the module's docstring).
    if discovery_pb2.DiscoveryRequest.FromString(middle) == discovery_pb2.DiscoveryRequest(
        resource_names=request.resource_names
    ):
        if len(_BY_ENCODING) > _LIMIT:
            _BY_ENCODING.clear()
        _BY_ENCODING[_key(raw, *bounds)] = (middle, names)
    return SotwRequest(request, names)


_TYPE_URL_FIELD = 4
_TRAILERS = [varint(_TYPE_URL_FIELD << 3 | 2) + varint(len(t)) + t.encode() for t in SHORT_NAMES]
_TRAILER_WINDOW = 4096
# resource name key: (length, last bytes) -> (the encoded names, their shared set)
_BY_ENCODING: dict[tuple[int, bytes], tuple[bytes, frozenset[str]]] = {}


def _bounds(raw: bytes) -> tuple[int, int] | None:
    """Where the names of a request shaped as Envoy writes it lie: after
    fields 1 and 2, before the type URL. None if it is not so shaped."""
    pos, size = 0, len(raw)
    try:
        while pos < size and raw[pos] in (0x0A, 0x12):  # version_info, node
            length, pos = read_varint(raw, pos + 1)
            pos += length
    except IndexError:
        return None
    if pos >= size or raw[pos] != 0x1A:  # resource_names
        return None
    # The trailing fields are short (a NACK's message may make them longer:
    # such a request takes the slow path); search only the end of the request.
    window = max(pos, size - _TRAILER_WINDOW)
    for trailer in _TRAILERS:
        end = raw.rfind(trailer, window)
        if end > pos:
            return pos, end
    return None


def _key(raw: bytes, start: int, end: int) -> tuple[int, bytes]:
    return end - start, raw[max(start, end - 32) : end]


def _fast(raw: bytes) -> SotwRequest | None:
    if len(raw) < 1024:  # small requests: parsing is cheap
        return None
    bounds = _bounds(raw)
    if bounds is None:
        return None
    start, end = bounds
    known = _BY_ENCODING.get(_key(raw, start, end))
    if known is None or not raw.startswith(known[0], start):
        return None
    try:
        rest = discovery_pb2.DiscoveryRequest.FromString(raw[:start] + raw[end:])
    except DecodeError:
        return None
    if rest.resource_names or rest.resource_locators:
        return None
    return SotwRequest(rest, known[1])
