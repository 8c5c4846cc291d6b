"""The CA's view of time, injected so expiry and rotation are tested without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]
"""Returns the current instant as a timezone-aware datetime."""


def utc_now() -> datetime:
    """The default :data:`Clock`: the system time in UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A :data:`Clock` test double that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start if start is not None else datetime(2030, 1, 1, tzinfo=UTC)
        if self.now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new time."""
        self.now += delta
        return self.now


def aware_now(clock: Clock) -> datetime:
    """Read ``clock``, refusing naive datetimes (they would compare wrongly with
    certificate times, which are always UTC)."""
    now = clock()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the CA clock returned a naive datetime; it must be timezone-aware")
    return now
