"""Push scheduling: how many large responses may be in flight at once, and
when a stream counts as stuck.

Why a throttle: ``context.write`` in grpc.aio returns once gRPC has taken the
message, not once the client has read it. A configuration change (or a cold
start) that writes a 1 MB CDS response to 2,000 streams at once therefore
queues gigabytes inside gRPC. Istio bounds this with ``PILOT_PUSH_THROTTLE``
(so many pushes in flight); sailplane does the same, counting a push as in
flight from the first response a stream sends until the client has answered
(ACK or NACK) every response it was sent.

The push queue itself is the snapshot cache: a stream wakes on its node's
change event and pushes the *latest* snapshot, so any number of changes while
a stream waits for a slot merge into one push (at most one pending push per
stream). Streams wait for slots in FIFO order (``asyncio.Semaphore``).

Small responses (under ``small`` bytes: an endpoint change, a route or
secret update) take no slot: they cost the server and the network little,
and making 2,000 of them queue behind each other would turn an EDS-only
push into 20 round trips in series. The throttle is for the large ones,
where the memory is.

A stream that stops answering holds its slot for at most ``slot_timeout``;
then the slot goes to the next stream (the slow stream keeps being served,
unthrottled). A stream that leaves a response unanswered for
``response_timeout``, or whose write blocks for ``write_timeout`` (it stopped
reading), is closed; the client reconnects. Other streams never wait on it
otherwise: each stream has its own task, and the only shared resource is
this throttle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

DEFAULT_CONCURRENCY = 100
DEFAULT_SLOT_TIMEOUT = 10.0
# Generous: a proxy on an overloaded host (or 2,000 simulated ones on two
# cores) can take a minute to ACK a large response and must not be cut off.
DEFAULT_RESPONSE_TIMEOUT = 300.0
# Responses smaller than this are sent without waiting for a slot.
DEFAULT_SMALL_RESPONSE = 64 * 1024


class PushThrottle:
    """At most ``limit`` streams with unanswered responses of ``small`` bytes
    or more."""

    def __init__(
        self, limit: int = DEFAULT_CONCURRENCY, small: int = DEFAULT_SMALL_RESPONSE
    ) -> None:
        if limit < 1:
            raise ValueError("the push throttle needs at least one slot")
        self.limit = limit
        self.small = small
        self._slots = asyncio.Semaphore(limit)
        self.waiting = 0  # streams queued for a slot (for /metrics and benchmarks)
        self.peak_waiting = 0
        self.in_flight = 0  # slots held

    async def acquire(self) -> None:
        if self._slots.locked():  # no slot free: this stream queues
            self.waiting += 1
            self.peak_waiting = max(self.peak_waiting, self.waiting)
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()


class Outstanding:
    """One stream's unanswered responses and its throttle slot.

    Keys are whatever the protocol answers by: the type URL for state of the
    world (only the latest nonce of a type can be answered), the nonce for
    delta (every response is ACKed)."""

    def __init__(
        self,
        throttle: PushThrottle | None,
        timeout: float,
        slot_timeout: float = DEFAULT_SLOT_TIMEOUT,
    ) -> None:
        self.throttle = throttle
        self.timeout = timeout
        self.slot_timeout = slot_timeout
        self.holding = False
        self._held_since = 0.0
        # The stream kept its slot past slot_timeout: it is served unthrottled
        # until it has answered everything.
        self.slow = False
        self._since: dict[Hashable, float] = {}

    async def before_send(self, size: int) -> None:
        """Wait for a slot, unless the stream holds one, lost its slot for
        being slow, or the response is small."""
        throttle = self.throttle
        if throttle is None or self.holding or self.slow or size < throttle.small:
            return
        await throttle.acquire()
        self.holding = True
        self._held_since = time.monotonic()

    def sent(self, key: Hashable) -> None:
        self._since.setdefault(key, time.monotonic())

    def answered(self, key: Hashable) -> None:
        self._since.pop(key, None)
        if not self._since:
            self.slow = False
            self.release()

    def release(self) -> None:
        if self.holding and self.throttle is not None:
            self.holding = False
            self.throttle.release()

    def deadline(self) -> float | None:
        """When :meth:`expire` has something to do: give up the slot, or close."""
        if not self._since:
            return None
        close = min(self._since.values()) + self.timeout
        if self.holding:
            return min(close, self._held_since + self.slot_timeout)
        return close

    def expire(self) -> bool:
        """Past :meth:`deadline`: release the slot; True if the stream must close."""
        now = time.monotonic()
        if self.holding and now >= self._held_since + self.slot_timeout:
            self.slow = True
            self.release()
        if self._since and now >= min(self._since.values()) + self.timeout:
            self.release()
            return True
        return False


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RESPONSE_TIMEOUT",
    "DEFAULT_SLOT_TIMEOUT",
    "DEFAULT_SMALL_RESPONSE",
    "Outstanding",
    "PushThrottle",
]
