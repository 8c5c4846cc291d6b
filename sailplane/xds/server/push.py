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
stream). Streams wait for slots in FIFO order (proven ones first, see below).

Small responses (under ``small`` bytes: an endpoint change, a route or
secret update) take no slot: they cost the server and the network little,
and making 2,000 of them queue behind each other would turn an EDS-only
push into 20 round trips in series. The throttle is for the large ones,
where the memory is.

Except where the memory is in the answer. A state-of-the-world request
repeats the whole subscription, so the ACK of a 450-byte EDS response from
a sidecar of 3,000 clusters is 150 KB. gRPC takes every answer off the
wire as it comes, and keeps it until the event loop reads it: 2,000 such
answers arriving faster than one thread reads them held up to 400 MB at
once. A push whose response is small but whose answer will not be (the
caller says how large: the client's last request of the type) takes a slot
of the throttle's ``answers``, which has ``answer_share`` times as many
slots (an answer is smaller than a megabyte of CDS). At 2,000 proxies of
1,000 services, this keeps the peak RSS of a SotW endpoint change at
350-430 MB, where it was 470-730 MB, at the same speed.

Proven streams first. A stream is *proven* once it has answered a response
that held a slot before the slot timed out: it is a client that reads and
answers, as Envoy does. Every other stream (a new one, or one that let a
slot time out) is *unproven*: it may hold at most ``unproven_limit`` of the
slots (half, by default), its slots time out sooner, and a freed slot goes
to a waiting proven stream before any unproven one. So streams that take
large responses and never answer hold at most half the slots, for a few
seconds each, and a configuration change reaches the proxies that do answer
without queueing behind them. At a cold start every stream is new; the
proven ones (those that answered their first response) finish first, which
also keeps the number of half-served streams down.

A stream that stops answering holds its slot for at most ``slot_timeout``
(``unproven_slot_timeout`` if unproven); then the slot goes to the next
stream and the stream is unproven again. Until it answers, it is pushed
nothing new (a server need not send a type again before the client has
answered the last response, and go-control-plane never does): it gets the
latest configuration, in push order, once it answers; what it asks for
meanwhile is served without a slot. So hundreds of such streams cost a
configuration change nothing. A stream that leaves a response unanswered for
``response_timeout``, or whose write blocks for ``write_timeout`` (it
stopped reading), is closed; the client reconnects. Other streams never wait
on it otherwise: each stream has its own task, and the only shared resource
is this throttle.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable

DEFAULT_CONCURRENCY = 100
DEFAULT_SLOT_TIMEOUT = 10.0
# A stream that never answered gives its slot up sooner: a real Envoy answers
# a large response in well under a second; a cold start of 2,000 simulated
# proxies on two cores takes ~0.7 s per hundred.
DEFAULT_UNPROVEN_SLOT_TIMEOUT = 3.0
# Generous: a proxy on an overloaded host (or 2,000 simulated ones on two
# cores) can take a minute to ACK a large response and must not be cut off.
DEFAULT_RESPONSE_TIMEOUT = 300.0
# Responses smaller than this are sent without waiting for a slot.
DEFAULT_SMALL_RESPONSE = 64 * 1024
# Slots for pushes large only in their answer, per slot for large responses.
ANSWER_SHARE = 4


class PushThrottle:
    """At most ``limit`` streams with unanswered responses of ``small`` bytes
    or more, of which at most ``unproven_limit`` unproven; and, in
    ``answers``, ``answer_share`` times as many whose responses are small
    but whose answers are not (see above)."""

    def __init__(
        self,
        limit: int = DEFAULT_CONCURRENCY,
        small: int = DEFAULT_SMALL_RESPONSE,
        unproven_limit: int | None = None,
        answer_share: int = ANSWER_SHARE,
    ) -> None:
        if limit < 1:
            raise ValueError("the push throttle needs at least one slot")
        self.limit = limit
        self.unproven_limit = max(1, limit // 2) if unproven_limit is None else unproven_limit
        if not 1 <= self.unproven_limit <= limit:
            raise ValueError("unproven_limit must be between 1 and limit")
        self.small = small
        self.in_flight = 0  # slots held
        self.unproven_in_flight = 0  # of which by unproven streams
        # Streams queued for a slot, in arrival order; proven ones first.
        self._waiting: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}
        self.peak_waiting = 0  # (for /metrics and benchmarks)
        self.timed_out = {True: 0, False: 0}  # slots given up by slot timeout, proven or not
        self.answers = (
            PushThrottle(limit * answer_share, small, answer_share=0) if answer_share else None
        )

    @property
    def waiting(self) -> int:
        return len(self._waiting[True]) + len(self._waiting[False])

    def _free(self, proven: bool) -> bool:
        if self.in_flight >= self.limit:
            return False
        return proven or self.unproven_in_flight < self.unproven_limit

    def _take(self, proven: bool) -> None:
        self.in_flight += 1
        if not proven:
            self.unproven_in_flight += 1

    async def acquire(self, proven: bool) -> None:
        queue = self._waiting[proven]
        ahead = self._waiting[True] if proven else self.waiting
        if not ahead and self._free(proven):
            self._take(proven)
            return
        granted = asyncio.get_running_loop().create_future()
        queue.append(granted)
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            await granted  # _grant took the slot for us
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(proven)  # granted, then cancelled: pass it on
            elif granted in queue:
                queue.remove(granted)
            raise

    def release(self, proven: bool) -> None:
        self.in_flight -= 1
        if not proven:
            self.unproven_in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        for proven in (True, False):
            queue = self._waiting[proven]
            while queue and self._free(proven):
                granted = queue.popleft()
                if not granted.done():
                    self._take(proven)
                    granted.set_result(None)


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
        unproven_slot_timeout: float | None = None,
    ) -> None:
        self.throttle = throttle
        self.timeout = timeout
        self.slot_timeout = slot_timeout
        self.unproven_slot_timeout = (
            min(slot_timeout, DEFAULT_UNPROVEN_SLOT_TIMEOUT)
            if unproven_slot_timeout is None
            else unproven_slot_timeout
        )
        # Answered a response that held a slot, in time (see the docstring).
        self.proven = False
        self.holding = False
        self._held_by = throttle  # the throttle (or its answers) the slot is of
        self._held_proven = False  # the slot held was taken as a proven stream
        self._held_since = 0.0
        # The stream kept its slot past its timeout: until it has answered
        # everything it is pushed nothing new, and what it asks for is
        # served without a slot.
        self.slow = False
        self._since: dict[Hashable, float] = {}

    @property
    def unanswered(self) -> int:
        return len(self._since)

    async def before_send(self, size: int, answer: int = 0) -> None:
        """Wait for a slot, unless the stream holds one, lost its slot for
        being slow, or the response of ``size`` bytes and the ``answer``
        the client will send to it are both small. A large answer to a
        small response waits for a slot of the throttle's ``answers``."""
        throttle = self.throttle
        if throttle is None or self.slow:
            return
        if self.holding:
            if self._held_by is throttle or size < throttle.small:
                return
            self.release()  # a slot of answers, for a large response: trade it in
        if size < throttle.small:
            if answer < throttle.small or throttle.answers is None:
                return
            throttle = throttle.answers
        proven = self.proven
        await throttle.acquire(proven)
        self.holding, self._held_by, self._held_proven = True, throttle, proven
        self._held_since = time.monotonic()

    def sent(self, key: Hashable) -> None:
        self._since.setdefault(key, time.monotonic())

    def answered(self, key: Hashable) -> None:
        self._since.pop(key, None)
        if not self._since:
            if self.holding:
                self.proven = True  # answered everything before its slot timed out
            self.slow = False
            self.release()

    def release(self) -> None:
        if self.holding and self._held_by is not None:
            self.holding = False
            self._held_by.release(self._held_proven)

    def _slot_deadline(self) -> float:
        timeout = self.slot_timeout if self._held_proven else self.unproven_slot_timeout
        return self._held_since + timeout

    def deadline(self) -> float | None:
        """When :meth:`expire` has something to do: give up the slot, or close."""
        if not self._since:
            return None
        close = min(self._since.values()) + self.timeout
        if self.holding:
            return min(close, self._slot_deadline())
        return close

    def expire(self) -> bool:
        """Past :meth:`deadline`: release the slot; True if the stream must close."""
        now = time.monotonic()
        if self.holding and now >= self._slot_deadline():
            if self._held_by is not None:
                self._held_by.timed_out[self._held_proven] += 1
            self.slow = True
            self.proven = False  # it must answer in time again to be proven
            self.release()
        if self._since and now >= min(self._since.values()) + self.timeout:
            self.release()
            return True
        return False


__all__ = [
    "ANSWER_SHARE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RESPONSE_TIMEOUT",
    "DEFAULT_SLOT_TIMEOUT",
    "DEFAULT_SMALL_RESPONSE",
    "DEFAULT_UNPROVEN_SLOT_TIMEOUT",
    "Outstanding",
    "PushThrottle",
]
