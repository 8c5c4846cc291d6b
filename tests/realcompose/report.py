"""What the real compose test prints: each step with its time, and results."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

PREFIX = "realcompose:"


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    print(f"{PREFIX} {what} ...", flush=True)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        print(f"{PREFIX} {what}: FAILED after {time.monotonic() - start:.1f} s", flush=True)
        raise
    print(f"{PREFIX} {what}: done in {time.monotonic() - start:.1f} s", flush=True)


def result(line: str) -> None:
    """A measured result: these lines are the test's findings."""
    print(f"{PREFIX} RESULT {line}", flush=True)


def skip(reason: str) -> None:
    print(f"{PREFIX} SKIPPED: {reason}", file=sys.stderr, flush=True)
