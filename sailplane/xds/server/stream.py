"""What the state-of-the-world and the delta stream have in common: identity,
per-type state, nonces, the push throttle slot, the make-before-break
question (have listeners and routes been accepted yet?), and the stream's
life: a reader task that parses requests into a bounded inbox, and the
stream's own task that handles them and snapshot changes in arrival order.

A stream knows the server only through its :class:`StreamContext`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import grpc

from sailplane.xds.resources import TypeResources
from sailplane.xds.server.context import Context, StreamContext
from sailplane.xds.server.push import Outstanding
from sailplane.xds.server.status import StreamStatus
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.types import LISTENER, ROUTE, VIRTUAL_HOST

log = logging.getLogger("sailplane.xds")

# Removals of clusters and endpoints wait until these are ACKed at their new
# versions (virtual hosts: delta streams on VHDS only).
REFERRING_TYPES = (LISTENER, ROUTE, VIRTUAL_HOST)


class Wake:
    """A stream's doorbell: a request arrived, its snapshot changed, or a
    deadline passed. Rings are remembered until the stream next waits, so
    none is lost while it is busy writing."""

    __slots__ = ("_future", "_rung")

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        self._rung = False

    def ring(self) -> None:
        self._rung = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, deadline: float | None = None) -> None:
        """Until rung (at once, if it was since the last wait), or ``deadline``
        (``loop.time()``) passes."""
        if not self._rung:
            loop = asyncio.get_running_loop()
            self._future = loop.create_future()
            timer = None if deadline is None else loop.call_at(deadline, self.ring)
            try:
                await self._future
            finally:
                self._future = None
                if timer is not None:
                    timer.cancel()
        self._rung = False


class End:
    """Last in a stream's inbox: the client ended the stream (``error`` is
    None), or reading failed with ``error``, which the stream's task raises."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _TypeState(Protocol):
    @property
    def wanted(self) -> bool: ...


S = TypeVar("S", bound=_TypeState)
R = TypeVar("R")  # a parsed request


class StreamCore(Generic[S, R]):
    """Base of one ADS stream; all its state is touched by its own task only."""

    def __init__(
        self,
        ctx: StreamContext,
        context: Context,
        node_id: str,
        status: StreamStatus,
        new_state: Callable[[], S],
    ) -> None:
        self.ctx = ctx
        self.context = context  # the gRPC call
        self.node_id = node_id
        self.status = status
        self.types: dict[str, S] = {}
        # Requests read by the stream's reader task, for its own task to
        # handle, with their sizes; the reader reads no further while they
        # add up to more than limits.inbox_bytes (HTTP/2 holds the client).
        self.inbox: deque[tuple[R | End, int]] = deque()
        self.inbox_bytes = 0
        self.room = Wake()  # rung when the stream takes requests from its inbox
        self.wake = Wake()
        # A snapshot change not pushed yet: the stream let a slot time out
        # and has not answered since (see push.py).
        self.deferred = False
        self._nonces = itertools.count(1)
        self._new_state = new_state
        self.outstanding = Outstanding(
            ctx.throttle, ctx.response_timeout, ctx.slot_timeout, ctx.unproven_slot_timeout
        )

    def state(self, type_url: str) -> S:
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = self._new_state()
        return found

    def withholding(self, type_url: str, snapshot: Snapshot) -> bool:
        """Whether the snapshot withholds ``type_url`` from this stream. The
        first time, the reason goes to the stream's status and the log; the
        stream gets no response for the type (the client times out on it)."""
        reason = snapshot.withheld.get(type_url)
        if reason is None:
            return False
        status = self.status.of(type_url)
        if status.error != reason:
            status.error = reason
            log.warning("%s: %s", self.node_id, reason)
        return True

    def served(self, type_url: str, snapshot: Snapshot) -> TypeResources:
        """What this stream is served of ``type_url`` (delta streams: routes
        and virtual hosts as VHDS has them)."""
        return snapshot.get(type_url)

    def _referrers_synced(self, snapshot: Snapshot) -> bool:
        """Have listeners and routes been accepted at the snapshot's versions?"""
        for type_url in REFERRING_TYPES:
            st = self.types.get(type_url)
            if st is None or not st.wanted:
                continue
            if self.status.of(type_url).acked != self.served(type_url, snapshot).version:
                return False
        return True

    # -- the stream's life -------------------------------------------------

    def parse(self, raw: bytes) -> R:
        """One request from its bytes (after the stream was admitted); raises
        LimitExceeded for one over the server's limits."""
        raise NotImplementedError

    async def on_request(self, request: R, snapshot: Snapshot) -> None:
        raise NotImplementedError

    async def push(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def held_until(self) -> float | None:
        """When what the stream holds back for the client's next request is
        sent whether it came or not (None: nothing held)."""
        return None

    async def release_held(self, snapshot: Snapshot) -> None:
        """Send what was held back (its time is up)."""

    def end(self) -> None:
        """The stream is over: give its slot back and drop what the client
        sent (a traceback may hold this object a while longer)."""
        self.outstanding.release()
        self.inbox.clear()
        self.inbox_bytes = 0
        self.types.clear()

    def put(self, item: R | End, size: int = 0) -> None:
        self.inbox.append((item, size))
        self.inbox_bytes += size
        self.wake.ring()

    def receive(self, raw: bytes) -> None:
        """Parse one request into the inbox."""
        self.put(self.parse(raw), len(raw))

    async def serve(self) -> None:
        """Read requests in a task of their own; handle them, and snapshot
        changes, in this one (see :meth:`run`)."""
        source, ring = self.ctx.source, self.wake.ring
        source.watch(self.node_id, ring)
        reader = asyncio.create_task(self.read_requests())
        try:
            await self.run()
        finally:
            source.unwatch(self.node_id, ring)
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def read_requests(self) -> None:
        """The reader task: parse each request into the inbox and ring;
        EOF or the read's error last."""
        limit = self.ctx.limits.inbox_bytes
        try:
            while True:
                while self.inbox_bytes > limit:
                    await self.room.wait()
                raw = await self.context.read()
                if raw is grpc.aio.EOF:
                    self.put(End())
                    return
                self.ctx.trimmer.received(len(raw))
                self.receive(raw)
                del raw  # not kept while the next read waits (2,000 idle streams)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the stream is ending and cancelled its reader
            self.put(End(exc))  # the call was cancelled under the read
        except Exception as exc:  # the stream's task re-raises it
            self.put(End(exc))

    async def run(self) -> None:
        """Requests and snapshot changes, in arrival order, until the client
        ends the stream (or a request, a read, or a timeout ends it)."""
        source, node_id, inbox = self.ctx.source, self.node_id, self.inbox
        snapshot = None
        while True:
            new = source.get(node_id)
            moved = new is not None and new is not snapshot and snapshot is not None
            if new is not None:
                snapshot = new
            if snapshot is not None:  # requests wait for the node's first snapshot
                for _ in range(len(inbox)):
                    request, size = inbox[0]
                    if isinstance(request, End):
                        break
                    inbox.popleft()
                    self.inbox_bytes -= size
                    self.room.ring()
                    await self.on_request(request, snapshot)
                    del request
                if moved or self.deferred:
                    self.deferred = self.outstanding.slow and self.outstanding.unanswered > 0
                    if not self.deferred:
                        await self.push(snapshot)
            if inbox and isinstance(end := inbox[-1][0], End):
                if end.error is not None:
                    raise end.error
                return
            held = self.held_until()
            if held is not None and snapshot is not None and time.monotonic() >= held:
                await self.release_held(snapshot)
                continue
            deadline = self.outstanding.deadline()
            if deadline is not None and time.monotonic() >= deadline:
                if self.outstanding.expire():
                    raise TimeoutError("a response went unanswered")
                continue
            if held is not None:
                deadline = held if deadline is None else min(deadline, held)
            await self.wake.wait(deadline)  # loop.time() is time.monotonic()


__all__ = ["REFERRING_TYPES", "End", "StreamCore", "Wake"]
