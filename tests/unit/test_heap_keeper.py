"""The heap keeper's settles (server/heap.py): an ordinary settle collects
only what was allocated since the last one; garbage cycles among frozen
objects wait for a full settle, the first one and then at most one every
``full_every`` seconds."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from benchmarks.fanout import changed_spec
from benchmarks.meshgen import MeshSpec, generate_texts, write_texts
from sailplane.server.heap import HeapKeeper
from sailplane.server.plane import ControlPlane, ServeOptions


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


def test_a_reload_leaves_no_garbage_cycles_for_the_collector(tmp_path: Path) -> None:
    """Everything a reload drops goes by reference counting: a cycle it left
    (a nested recursive function, one per DestinationRule, was one) costs a
    collection during the push that follows, with 2,000 streams' state young."""
    spec = MeshSpec(services=20, ports=1, workloads_per_service=2, subsets=2)
    write_texts(tmp_path, generate_texts(spec))
    plane = ControlPlane(
        ServeOptions(tmp_path, xds_address=None, monitor_address=("127.0.0.1", 0), watch=False)
    )
    assert plane.reload()
    for change in ("weight", "endpoint"):
        spec = changed_spec(spec, change)
        write_texts(tmp_path, generate_texts(spec))
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            assert plane.reload()
            gc.collect()
            left = [o for o in gc.garbage if type(o).__name__ == "function"]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        ours = sorted(f"{f.__module__}.{f.__qualname__}" for f in left)
        assert [name for name in ours if name.startswith("sailplane.")] == [], change
