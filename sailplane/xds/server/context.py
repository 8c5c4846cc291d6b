"""What a stream needs of the server, and what the server needs of the cache.

A stream is handed a :class:`StreamContext`, not the server: the snapshots
(through :class:`SnapshotSource`), the observation hooks, the push throttle
and its timeouts, the write function, the limits, and the helpers its
responses share with other streams. The server depends on the cache only
through :class:`SnapshotSource`; :class:`~sailplane.xds.cache.SnapshotCache`
is one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import grpc

from sailplane.memo import WeakIdentityMemo, WeakKeyIdentityMemo
from sailplane.xds.diff import Diffs
from sailplane.xds.server.hooks import ObservationHooks
from sailplane.xds.server.limits import StreamLimits
from sailplane.xds.server.memory import HeapTrimmer
from sailplane.xds.server.push import PushThrottle
from sailplane.xds.snapshot import Snapshot

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# Writes one response on a stream (see AdsServer.write).
Write: TypeAlias = Callable[[Context, bytes], Awaitable[None]]


class SnapshotSource(Protocol):
    """Where streams find their node's snapshot, and learn that it changed."""

    def get(self, node_id: str) -> Snapshot | None: ...

    def watch(self, node_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (cheaply: it rings a doorbell) whenever the
        node's snapshot changes."""
        ...

    def unwatch(self, node_id: str, callback: Callable[[], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamContext:
    """Everything one stream uses of the server, fixed when it is admitted."""

    source: SnapshotSource
    observer: ObservationHooks
    write: Write
    limits: StreamLimits
    throttle: PushThrottle
    response_timeout: float
    slot_timeout: float
    unproven_slot_timeout: float | None
    trimmer: HeapTrimmer
    # Shared by the server's streams: what one computed, the others reuse.
    diffs: Diffs
    unions: WeakIdentityMemo[frozenset[str]]  # delta subscriptions (see delta.py)
    # SotW partial responses, as shared pieces (see SotwStream._partial_parts).
    partials: WeakKeyIdentityMemo[tuple[bytes, ...]]
    # Delta streams get route tables built for it over VHDS (see vhds.py).
    vhds: bool = True
    # SotW: the longest listeners and routes wait for new clusters' endpoints.
    route_hold: float = 1.0


__all__ = ["Context", "SnapshotSource", "StreamContext", "Write"]
