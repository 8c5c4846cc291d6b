"""The snapshot cache: node id -> current snapshot, and change notification.

It knows nothing of gRPC or of Istio. Writers call :meth:`set`; each ADS
stream registers a callback for its node with :meth:`watch` (a plain call,
no task or event per change: a push to 2,000 streams rings 2,000 doorbells).
The ADS server sees it only as a
:class:`~sailplane.xds.server.SnapshotSource` (get, watch, unwatch).
"""

from __future__ import annotations

from collections.abc import Callable

from sailplane.xds.snapshot import Snapshot


class _Entry:
    __slots__ = ("snapshot", "watchers")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.watchers: list[Callable[[], None]] = []


def _same_versions(old: Snapshot, new: Snapshot) -> bool:
    """Every type at the same version (a type one lacks is at version "")."""
    a, b = old.resources, new.resources
    if a.keys() != b.keys():
        return all(old.version(t) == new.version(t) for t in {*a.keys(), *b.keys()})
    # (2,000 proxies per change: mostly the same objects, compared first)
    return all(x is (y := b[t]) or x.version == y.version for t, x in a.items())


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
        if old is not None and _same_versions(old, snapshot):
            return False
        for watcher in entry.watchers:
            watcher()
        return True

    def watch(self, node_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the node's snapshot changes."""
        self._entry(node_id).watchers.append(callback)

    def unwatch(self, node_id: str, callback: Callable[[], None]) -> None:
        entry = self._entries.get(node_id)
        if entry is not None and callback in entry.watchers:
            entry.watchers.remove(callback)

    def clear(self, node_id: str) -> None:
        """Forget the node's snapshot (its streams stay watching)."""
        entry = self._entries.get(node_id)
        if entry is not None:
            if entry.watchers:
                entry.snapshot = None
            else:
                del self._entries[node_id]

    def node_ids(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.snapshot is not None)
