"""Garbage collection for a process whose heap is mostly one large,
long-lived mesh.

CPython's cyclic collector walks every tracked object of a generation when
that generation is collected. A control plane for 1,000 services holds
millions of long-lived objects (the configuration model, encoded resources,
per-stream state), so full collections during a push cost hundreds of
milliseconds each and come back as the push allocates. Three measures:

* thresholds that collect the young generation less often (20,000
  allocations instead of 700), so a burst of pushes triggers few collections;
* once a burst is over (no reload, connect or push for ``quiet`` seconds),
  one full collection and then ``gc.freeze()``: what survived is moved out
  of the collector's sight, so later collections walk only new objects;
* when a configuration is put in force, ``gc.freeze()`` at once: the young
  collections of the push that follows walk what the push allocates, not
  the new configuration too.

Frozen objects are still freed by reference counting when they go away.
A settle collects only what was allocated since the last one (the frozen
objects are out of the collector's sight), then freezes it: after a change
at 5,000 services that is tens of milliseconds. Garbage cycles among frozen
objects wait for a full settle, which unfreezes and collects everything
before it freezes again: the first one, then at most one every
``full_every`` seconds (at 5,000 services with 8 proxies, ~0.4 s of the
event loop; done after every burst, it delayed the next change by as much).
Changes that never stop (a writer saving every half second) would put off
every settle, and with it any cycle frozen with a configuration: a settle
runs anyway once none has for ``overdue`` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import time

THRESHOLDS = (20_000, 20, 100)
FULL_EVERY = 60.0
OVERDUE = 300.0


class HeapKeeper:
    def __init__(
        self, quiet: float = 1.0, full_every: float = FULL_EVERY, overdue: float = OVERDUE
    ) -> None:
        self.quiet = quiet
        self.full_every = full_every
        self.overdue = overdue
        self._last_settle = time.monotonic()
        self._last = time.monotonic()
        self._settled = False
        self._last_full: float | None = None
        self.settles = 0
        self.full_settles = 0
        self.last_settle_ms = 0.0

    def configure(self) -> None:
        gc.set_threshold(*THRESHOLDS)

    def touch(self) -> None:
        """Something happened (a reload, a connect, a push)."""
        self._last = time.monotonic()
        self._settled = False

    def applied(self) -> None:
        """A configuration was just put in force, and the pushes it causes
        are about to start: freeze what is young now, the new generation's
        model and resources among it. Otherwise the push's first young
        collections walk all of it again (at 1,000 services, 1.4 of them per
        endpoint change, 45 ms of a 2,000-stream push) only to find it
        alive. What the reload left that is cyclic garbage (nothing, see
        test_heap_keeper) waits for the next full settle."""
        self.touch()
        gc.freeze()

    def settle_if_quiet(self) -> bool:
        """Collect and freeze if there was activity and it is over, or if
        activity that never stops has put off a settle for ``overdue``
        seconds (what :meth:`applied` froze must be looked at some time)."""
        now = time.monotonic()
        overdue = now - self._last_settle >= self.overdue
        if self._settled or (now - self._last < self.quiet and not overdue):
            return False
        started = time.perf_counter()
        if self._last_full is None or now - self._last_full >= self.full_every:
            gc.unfreeze()  # everything, frozen cycles included
            self._last_full = now
            self.full_settles += 1
        gc.collect()
        gc.freeze()
        self.last_settle_ms = (time.perf_counter() - started) * 1000
        self._settled = True
        self._last_settle = now
        self.settles += 1
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.quiet / 2)
            self.settle_if_quiet()


__all__ = ["FULL_EVERY", "OVERDUE", "THRESHOLDS", "HeapKeeper"]
