"""Remembering what was computed from objects, by their identity, within a bound.

Why identity: the objects are large immutable values that many callers share
(a VirtualService, one type's encoded resources, a set of 3,000 names);
hashing or comparing them by value would cost what recomputing does.

Why an entry holds its objects: an ``id()`` is reused once its object is
freed, so an entry keyed by ids that did not hold them could answer for
another object. :class:`IdentityMemo` holds them strongly (they live as long
as their entry); :class:`WeakIdentityMemo` holds them, and the value, weakly
(an entry goes with them) and checks them on every lookup;
:class:`WeakKeyIdentityMemo` holds them weakly and the value strongly, and
forgets an entry as soon as one of its objects is freed (a memo of what
differs between two generations must not keep old generations alive).

Why a bound: these objects come and go with configurations and streams; at
most ``maxsize`` entries are kept, the least recently used forgotten first.

A leaf module: it imports nothing of sailplane, so every layer may use it.
"""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

V = TypeVar("V")
E = TypeVar("E")  # what an entry holds


class _BoundedMemo(Generic[V, E]):
    """The bookkeeping both memos share: entries by the ids of their objects,
    the least recently used dropped first past ``maxsize``. What an entry
    holds, and whether it still answers, is the subclass's."""

    __slots__ = ("_entries", "_newest", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a memo needs room for at least one entry")
        self.maxsize = maxsize
        self._entries: dict[tuple[int, ...], E] = {}
        # The key used last: 2,000 streams asking the same thing in a row
        # find it without moving it to the end again.
        self._newest: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, *objects: object) -> V | None:
        key = tuple(map(id, objects))
        entries = self._entries
        if key == self._newest:  # last already
            entry = entries.get(key)
        elif (entry := entries.pop(key, None)) is not None:
            entries[key] = entry  # the most recently used go last
            self._newest = key
        if entry is None:
            return None
        value = self._answer(entry, objects)
        if value is None:
            entries.pop(key, None)  # gone, or another object now has that id
        return value

    def put(self, objects: tuple[object, ...], value: V) -> V:
        """Remember ``value`` for ``objects``; returns it."""
        key = tuple(map(id, objects))
        self._entries.pop(key, None)
        self._entries[key] = self._entry(objects, value)
        self._newest = key
        while len(self._entries) > self.maxsize:
            del self._entries[next(iter(self._entries))]
        return value

    def clear(self) -> None:
        self._entries.clear()
        self._newest = ()

    def _entry(self, objects: tuple[object, ...], value: V) -> E:
        raise NotImplementedError

    def _answer(self, entry: E, objects: tuple[object, ...]) -> V | None:
        raise NotImplementedError


class IdentityMemo(_BoundedMemo[V, tuple[tuple[object, ...], V]]):
    """Values by the identity of the objects they were computed from; the
    objects are kept alive with their entry (so their ids stay theirs)."""

    __slots__ = ()

    def _entry(self, objects: tuple[object, ...], value: V) -> tuple[tuple[object, ...], V]:
        return objects, value

    def _answer(self, entry: tuple[tuple[object, ...], V], objects: tuple[object, ...]) -> V:
        return entry[1]


_WeakEntry = tuple[tuple[weakref.ref[object], ...], weakref.ref[V]]


class WeakIdentityMemo(_BoundedMemo[V, _WeakEntry[V]]):
    """Like :class:`IdentityMemo`, but the objects and the value are held
    weakly: an entry answers only while they are all alive elsewhere (all
    must be weakly referable)."""

    __slots__ = ()

    def _entry(self, objects: tuple[object, ...], value: V) -> _WeakEntry[V]:
        return tuple(weakref.ref(o) for o in objects), weakref.ref(value)

    def _answer(self, entry: _WeakEntry[V], objects: tuple[object, ...]) -> V | None:
        refs, value_ref = entry
        value = value_ref()
        if value is None or any(ref() is not o for ref, o in zip(refs, objects, strict=True)):
            return None  # gone, or another object now has that id: forgotten
        return value


_KeyEntry = tuple[tuple[weakref.ref[object], ...], V]


class WeakKeyIdentityMemo(_BoundedMemo[V, _KeyEntry[V]]):
    """Values by the identity of objects held weakly (all must be weakly
    referable); the value is held strongly, and the entry is dropped when
    any of its objects is freed."""

    __slots__ = ()

    def _entry(self, objects: tuple[object, ...], value: V) -> _KeyEntry[V]:
        key = tuple(map(id, objects))
        entries = self._entries

        def forget(_: weakref.ref[object]) -> None:
            entry = entries.get(key)
            if entry is not None and entry[0] is refs:
                del entries[key]

        refs = tuple(weakref.ref(o, forget) for o in objects)
        return refs, value

    def _answer(self, entry: _KeyEntry[V], objects: tuple[object, ...]) -> V | None:
        refs, value = entry
        for ref, o in zip(refs, objects, strict=True):  # (a loop: no generator per call)
            if ref() is not o:
                return None
        return value


__all__ = ["IdentityMemo", "WeakIdentityMemo", "WeakKeyIdentityMemo"]
