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


def test_what_a_reload_made_is_frozen_before_the_push_and_collected_by_a_full_settle(
    tmp_path: Path,
) -> None:
    """The new configuration is out of the young collections' sight once it
    is in force (they would walk it during the push, only to find it alive);
    a cycle made before it waits for a full settle."""
    spec = MeshSpec(services=5, ports=1, workloads_per_service=1, subsets=1)
    write_texts(tmp_path, generate_texts(spec))
    plane = ControlPlane(
        ServeOptions(tmp_path, xds_address=None, monitor_address=("127.0.0.1", 0), watch=False)
    )
    gc.collect()
    gc.disable()  # no collection during the reload: only the freeze matters
    try:
        cycle = _garbage_cycle()
        assert plane.reload()
        gc.enable()
        mesh = plane.controller.mesh
        assert not any(o is mesh for g in (0, 1, 2) for o in gc.get_objects(g))
        gc.collect()
        assert cycle() is not None  # frozen with the new configuration
        plane.heap.full_every = 0.0
        assert plane.heap.settle_if_quiet() is False  # not quiet yet (quiet=1.0)
        plane.heap.quiet = 0.0
        assert plane.heap.settle_if_quiet() and cycle() is None
    finally:
        gc.enable()
        gc.unfreeze()


def test_activity_that_never_stops_does_not_put_off_a_settle_for_ever() -> None:
    keeper = HeapKeeper(quiet=3600.0, full_every=0.0, overdue=3600.0)
    try:
        cycle = _garbage_cycle()
        keeper.applied()
        assert not keeper.settle_if_quiet()  # busy: the cycle stays frozen
        assert cycle() is not None
        keeper.overdue = 0.0
        keeper.applied()  # still busy, but no settle for `overdue` seconds
        assert keeper.settle_if_quiet() and cycle() is None
    finally:
        gc.unfreeze()
