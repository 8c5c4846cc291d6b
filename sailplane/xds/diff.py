"""Which resources differ between two versions of a type, computed once per
pair of shared objects, whichever stream asks first: a push to 2,000
streams costs one comparison, not 2,000."""

from __future__ import annotations

from sailplane.memo import WeakKeyIdentityMemo
from sailplane.xds.resources import TypeResources

# Pairs remembered. A push compares each shared object with its successor
# (clusters, endpoints, each route table, ...), so a few dozen are live at once.
DEFAULT_PAIRS = 256
_NOTHING: frozenset[str] = frozenset()


class Diffs:
    """Names added, changed or removed between two :class:`TypeResources`.
    One per server: its streams share what it computed."""

    __slots__ = ("_memo",)

    def __init__(self, pairs: int = DEFAULT_PAIRS) -> None:
        # Holds the pairs weakly: an entry goes with either generation (a
        # strong hold kept up to 256 old generations of every type alive).
        self._memo: WeakKeyIdentityMemo[frozenset[str]] = WeakKeyIdentityMemo(pairs)

    def changed(self, old: TypeResources, new: TypeResources) -> frozenset[str]:
        """Names added, changed or removed between ``old`` and ``new``. Layered
        resources (a proxy's own over the mesh's) compare part by part."""
        if old is new:  # most types of most streams at most pushes
            return _NOTHING
        old_parts, new_parts = old.parts(), new.parts()
        if len(old_parts) == len(new_parts) > 1:
            out = _NOTHING
            for a, b in zip(old_parts, new_parts, strict=True):
                if a is not b and (part := self._single(a, b)):
                    out = out | part if out else part
            return out
        return self._single(old, new)

    def removed(self, old: TypeResources, new: TypeResources) -> list[str]:
        """Names ``old`` has and ``new`` does not."""
        if old is new:
            return []
        return [n for n in self.changed(old, new) if n not in new.chunks]

    def _single(self, old: TypeResources, new: TypeResources) -> frozenset[str]:
        if old is new:
            return _NOTHING
        found = self._memo.get(old, new)
        if found is not None:
            return found
        a, b = old.chunks, new.chunks
        names = frozenset(
            n for n in a.keys() | b.keys() if (x := a.get(n)) is not (y := b.get(n)) and x != y
        )
        return self._memo.put((old, new), names)


__all__ = ["Diffs"]
