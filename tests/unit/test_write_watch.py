"""The server's write watch (xds/server/lifecycle.py): a write blocked past
the timeout ends its stream's task; one that completes does not; a loop
that closed with the watch's timer pending leaves the next one watched.
(The real-gRPC case, a client that never reads: tests/protocol/test_stuck.py.)"""

from __future__ import annotations

import asyncio

from sailplane.xds.server.lifecycle import STUCK, WriteWatch


class _Wire:
    """A stream context whose writes take ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def write(self, message: bytes) -> None:
        await asyncio.sleep(self.delay)


async def _write(watch: WriteWatch, delay: float) -> str:
    task = asyncio.create_task(watch.write(_Wire(delay), b"x"))
    try:
        await task
    except asyncio.CancelledError:
        assert task in STUCK
        return "given up"
    return "written"


def test_a_blocked_write_is_given_up_and_a_quick_one_is_not() -> None:
    watch = WriteWatch(timeout=0.2)

    async def both() -> list[str]:
        return list(await asyncio.gather(_write(watch, 0.01), _write(watch, 30)))

    assert asyncio.run(both()) == ["written", "given up"]


def test_a_new_loop_is_watched_after_one_closed_with_the_timer_pending() -> None:
    watch = WriteWatch(timeout=0.2)
    assert asyncio.run(_write(watch, 0.0)) == "written"  # armed; the loop closes
    assert asyncio.run(asyncio.wait_for(_write(watch, 30), 5)) == "given up"
