"""What the ADS server asks of the rest of sailplane, and what it tells it:
two small Protocols, as go-control-plane's server exposes callbacks.

*Admission* decides whether a stream is served, and from which cache key.
It runs once per stream, after the stream was counted against its peer and
node (limits.py) and before anything else the client sent is kept
(lifecycle.py); ``on_disconnect`` is called once for every admitted stream.

*Observation* hears what happens on admitted streams: responses sent, ACKs,
NACKs. It is called on the stream's own task, once per response of every
stream, so it must be cheap and must not block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from envoy.config.core.v3 import base_pb2


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a stream: its address, and on an mTLS port the
    certificate it presented (PEM), which admission checks against the node."""

    address: str
    certificate_pem: bytes | None = None

    def __str__(self) -> str:
        return self.address


class AdmissionHooks(Protocol):
    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        """Admit a node; return its cache key. Raise
        :class:`~sailplane.errors.ProxyRefused` (UnknownProxy, IdentityMismatch) to refuse."""
        ...

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        """A stream ``on_connect`` admitted under the key ``node_id`` ended."""
        ...


class ObservationHooks(Protocol):
    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None: ...

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        """The stream accepted ``version`` of ``type_url`` (benchmarks wait on it)."""
        ...

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        """The stream rejected ``version``; the client stays on what it had."""
        ...

    def on_hold(self, node_id: str, outcome: str) -> None:
        """Listeners and routes held back for new clusters' endpoints went
        out: the client asked for those (``"asked"``), or it did not in
        time (``"expired"``)."""
        ...


class StreamHooks(AdmissionHooks, ObservationHooks, Protocol):
    """Both in one object (the control plane's metrics wrapper, test doubles)."""


class AdmitAll:
    """Admission for a cache that is filled by someone else: any node, under
    its own id (its streams wait for its snapshot)."""

    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        return str(node.id)

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        pass


class Unobserved:
    """Observation that records nothing."""

    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None:
        pass

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        pass

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        pass

    def on_hold(self, node_id: str, outcome: str) -> None:
        pass


__all__ = [
    "AdmissionHooks",
    "AdmitAll",
    "ObservationHooks",
    "Peer",
    "StreamHooks",
    "Unobserved",
]
