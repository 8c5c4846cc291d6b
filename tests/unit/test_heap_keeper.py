"""The heap keeper's settles (server/heap.py): an ordinary settle collects
only what was allocated since the last one; garbage cycles among frozen
objects wait for a full settle, the first one and then at most one every
``full_every`` seconds."""

from __future__ import annotations

import gc
import weakref

from sailplane.server.heap import HeapKeeper


class _Node:
    """A reference cycle: freed only by the cyclic collector."""

    def __init__(self) -> None:
        self.me = self


def _garbage_cycle() -> weakref.ref[_Node]:
    return weakref.ref(_Node())


def test_a_settle_collects_what_is_new_and_a_full_one_what_was_frozen() -> None:
    keeper = HeapKeeper(quiet=0.0, full_every=3600.0)
    try:
        keeper.touch()
        assert keeper.settle_if_quiet() and keeper.full_settles == 1  # the first is full
        survivor = _Node()
        old = weakref.ref(survivor)
        keeper.touch()
        keeper.settle_if_quiet()  # it is alive: frozen with the rest
        assert keeper.full_settles == 1
        del survivor  # now garbage, among the frozen objects
        new = _garbage_cycle()
        keeper.touch()
        keeper.settle_if_quiet()
        assert new() is None  # what came since the last settle is collected
        assert old() is not None  # what was frozen waits for a full settle
        assert keeper.full_settles == 1
        keeper.full_every = 0.0
        keeper.touch()
        keeper.settle_if_quiet()
        assert old() is None and keeper.full_settles == 2
    finally:
        gc.unfreeze()
