"""Giving memory back to the system after large requests.

A request of 15 MB passes through gRPC's buffers (allocated by its own
threads, in glibc arenas of their own) and becomes one Python bytes object.
Freed, that memory stays in the process: glibc returns a heap's memory only
from its top, and raises its mmap threshold after large frees, so the next
large buffer comes from the heap too. Forty such requests left ~400 MB of
free but resident memory behind. ``malloc_trim(0)`` hands free pages of
every arena back (glibc >= 2.8); it walks the heaps, so it runs once a
burst of large requests is over, not for each one. Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("sailplane.xds")

LARGE_REQUEST = 1024 * 1024  # requests at least this large count
TRIM_AFTER = 32 * 1024 * 1024  # trim once this many bytes of them were received


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class HeapTrimmer:
    """Counts large requests; ``delay`` seconds after the bytes they brought
    pass ``after``, trims the heap (once, however many more arrive)."""

    def __init__(self, after: int = TRIM_AFTER, delay: float = 1.0) -> None:
        self.after = after
        self.delay = delay
        self.trims = 0
        self._received = 0
        self._timer: asyncio.TimerHandle | None = None
        self._trim = _malloc_trim()

    def received(self, size: int) -> None:
        if size < LARGE_REQUEST or self._trim is None:
            return
        self._received += size
        if self._received >= self.after and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self.trim)

    def trim(self) -> None:
        """Now (also what the timer calls)."""
        self._timer = None
        self._received = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1


__all__ = ["HeapTrimmer"]
