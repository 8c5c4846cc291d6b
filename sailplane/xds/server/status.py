"""Per-proxy sync status, as ``istioctl proxy-status`` shows it.

For every stream and type: the version sent, the version ACKed, and the
state: SYNCED (acked what was sent), STALE (sent, no answer yet), NACKED
(rejected; Envoy's message kept), NOT_SENT, REFUSED (the stream may
not have the type: secrets asked for on the plaintext port), or MISSING
(acked, but listener or cluster names the client asked for do not exist:
a gRPC client asks LDS for ``echo:9999`` by name, and waits for it).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from sailplane.xds.types import SHORT_NAMES, STATUS_ORDER


class SyncState(enum.Enum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"
    NOT_SENT = "NOT_SENT"
    REFUSED = "REFUSED"  # the stream may not have this type (error says why)
    MISSING = "MISSING"  # acked, but names it asked for do not exist (``missing``)


@dataclass(slots=True)
class TypeStatus:
    sent: str | None = None
    acked: str | None = None
    error: str | None = None
    nacked: str | None = None  # the version that was rejected
    missing: tuple[str, ...] = ()  # names asked for that the version sent lacks

    @property
    def state(self) -> SyncState:
        if self.sent is None:
            return SyncState.NOT_SENT if self.error is None else SyncState.REFUSED
        if self.nacked == self.sent:
            return SyncState.NACKED
        if self.acked == self.sent:
            return SyncState.MISSING if self.missing else SyncState.SYNCED
        return SyncState.STALE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state.value,
            "sent": self.sent,
            "acked": self.acked,
            "error": self.error,
        }
        if self.missing:
            out["missing"] = list(self.missing)
        return out


@dataclass(slots=True)
class StreamStatus:
    proxy: str
    stream_id: int
    peer: str
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)
    delta: bool = False  # DeltaAggregatedResources rather than state of the world

    def of(self, type_url: str) -> TypeStatus:
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = TypeStatus()
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "stream": self.stream_id,
            "peer": self.peer,
            "protocol": "delta" if self.delta else "sotw",
            "connected_at": self.connected_at,
            "types": {
                SHORT_NAMES[t]: self.types[t].to_json() for t in STATUS_ORDER if t in self.types
            },
        }


class StatusRegistry:
    """Status of every open stream; streams register on connect, leave on close."""

    def __init__(self) -> None:
        self._streams: dict[int, StreamStatus] = {}
        self._by_proxy: dict[str, dict[int, StreamStatus]] = {}

    def add(self, status: StreamStatus) -> None:
        self._streams[status.stream_id] = status
        self._by_proxy.setdefault(status.proxy, {})[status.stream_id] = status

    def remove(self, stream_id: int) -> None:
        status = self._streams.pop(stream_id, None)
        if status is not None:
            of_proxy = self._by_proxy[status.proxy]
            del of_proxy[stream_id]
            if not of_proxy:
                del self._by_proxy[status.proxy]

    def latest(self, proxy: str) -> StreamStatus | None:
        """The proxy's newest open stream."""
        of_proxy = self._by_proxy.get(proxy)
        return of_proxy[max(of_proxy)] if of_proxy else None

    def streams(self) -> list[StreamStatus]:
        return sorted(self._streams.values(), key=lambda s: (s.proxy, s.stream_id))

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.streams()]
