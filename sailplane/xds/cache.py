"""The snapshot cache: node id -> current snapshot, and change notification.

It knows nothing of gRPC or of Istio. Writers call :meth:`set`; each ADS
stream waits on :meth:`changed` for its node.
"""

from __future__ import annotations

import asyncio

from sailplane.xds.snapshot import Snapshot


class _Entry:
    __slots__ = ("changed", "snapshot")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.changed = asyncio.Event()


class SnapshotCache:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def _entry(self, node_id: str) -> _Entry:
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry()
        return entry

    def get(self, node_id: str) -> Snapshot | None:
        entry = self._entries.get(node_id)
        return entry.snapshot if entry else None

    def set(self, node_id: str, snapshot: Snapshot) -> bool:
        """Store ``snapshot``; wake the node's streams if any type's version moved.
        Returns whether anything changed (unchanged content = nothing pushed)."""
        entry = self._entry(node_id)
        old = entry.snapshot
        entry.snapshot = snapshot
        if old is not None and all(
            old.version(t) == snapshot.version(t)
            for t in {*old.resources.keys(), *snapshot.resources.keys()}
        ):
            return False
        entry.changed.set()
        entry.changed = asyncio.Event()
        return True

    def changed(self, node_id: str) -> asyncio.Event:
        """An event set at the node's next change (take it before reading)."""
        return self._entry(node_id).changed

    def clear(self, node_id: str) -> None:
        self._entries.pop(node_id, None)

    def node_ids(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.snapshot is not None)
