"""Reading state-of-the-world requests without rebuilding their name lists.

Envoy repeats a type's whole subscription in every request, ACKs included:
a sidecar of a 6,000-cluster mesh sends 6,000 EDS names with each EDS ACK,
and 2,000 sidecars do so after every endpoint change. Parsing such a request
is cheap (C); turning its names into a Python set is not (~0.5 ms). Most of
those lists are identical, so each distinct list of names becomes one shared
frozenset, found by the bytes that encode it.

The bytes are located without scanning the names: a request is its other
fields (numbered below ``resource_names``, 3, and above it) around the names,
as Envoy writes fields in number order. Those other fields are re-encoded
here; when the request starts and ends with exactly them, what is between is
exactly the encoded names. Anything else (another field order, an unusual
field) takes the slow path, which is always right. (A client that hid
protobuf-encoded fields inside its own resource names could only confuse
its own subscription.)
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

_SHARED_BELOW = 8  # smaller subscriptions are cheap to build and not worth sharing
_BY_ENCODING: dict[bytes, frozenset[str]] = {}
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
    request = discovery_pb2.DiscoveryRequest.FromString(raw)
    if len(request.resource_names) < _SHARED_BELOW or request.resource_locators:
        return SotwRequest(request, intern_names(frozenset(request.resource_names)))
    below = discovery_pb2.DiscoveryRequest(version_info=request.version_info)
    if request.HasField("node"):
        below.node.CopyFrom(request.node)
    above = discovery_pb2.DiscoveryRequest(
        type_url=request.type_url, response_nonce=request.response_nonce
    )
    if request.HasField("error_detail"):
        above.error_detail.CopyFrom(request.error_detail)
    head = below.SerializeToString(deterministic=True)
    tail = above.SerializeToString(deterministic=True)
    if not (raw.startswith(head) and raw.endswith(tail)):
        return SotwRequest(request, intern_names(frozenset(request.resource_names)))
    encoding = raw[len(head) : len(raw) - len(tail)]
    names = _BY_ENCODING.get(encoding)
    if names is None:
        names = intern_names(frozenset(request.resource_names))
        if len(_BY_ENCODING) > _LIMIT:
            _BY_ENCODING.clear()
        _BY_ENCODING[encoding] = names
    return SotwRequest(request, names)
