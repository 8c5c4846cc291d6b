"""What the state-of-the-world and the delta stream have in common: identity,
per-type state, nonces, the push throttle slot, the make-before-break
question (have listeners and routes been accepted yet?), and the stream's
life: a reader task that parses requests into a bounded inbox, and the
stream's own task that handles them and snapshot changes in arrival order."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import grpc

from sailplane.xds.push import Outstanding
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.status import StreamStatus
from sailplane.xds.types import LISTENER, ROUTE

if TYPE_CHECKING:
    from sailplane.xds.server import AdsServer

log = logging.getLogger("sailplane.xds")

# Removals of clusters and endpoints wait until these are ACKed at their new versions.
REFERRING_TYPES = (LISTENER, ROUTE)


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


class _TypeState(Protocol):
    @property
    def wanted(self) -> bool: ...


S = TypeVar("S", bound=_TypeState)


class StreamCore(Generic[S]):
    """Base of one ADS stream; all its state is touched by its own task only."""

    def __init__(
        self,
        server: AdsServer,
        context: grpc.aio.ServicerContext[Any, Any],
        node_id: str,
        status: StreamStatus,
        new_state: Callable[[], S],
    ) -> None:
        self.server = server
        self.context = context
        self.node_id = node_id
        self.status = status
        self.types: dict[str, S] = {}
        # Requests read by the stream's reader task, for its own task to
        # handle, with their sizes; the reader reads no further while they
        # add up to more than limits.inbox_bytes (HTTP/2 holds the client).
        self.inbox: deque[tuple[Any, int]] = deque()
        self.inbox_bytes = 0
        self.room = Wake()  # rung when the stream takes requests from its inbox
        self.wake = Wake()
        # A snapshot change not pushed yet: the stream let a slot time out
        # and has not answered since (see push.py).
        self.deferred = False
        self._nonces = itertools.count(1)
        self._new_state = new_state
        self.outstanding = Outstanding(
            server.throttle,
            server.response_timeout,
            server.slot_timeout,
            server.unproven_slot_timeout,
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

    def _referrers_synced(self, snapshot: Snapshot) -> bool:
        """Have listeners and routes been accepted at the snapshot's versions?"""
        for type_url in REFERRING_TYPES:
            st = self.types.get(type_url)
            if st is None or not st.wanted:
                continue
            if self.status.of(type_url).acked != snapshot.version(type_url):
                return False
        return True

    # -- the stream's life -------------------------------------------------

    def parse(self, raw: bytes) -> Any:
        """One request from its bytes (after the stream was admitted); raises
        LimitExceeded for one over the server's limits."""
        raise NotImplementedError

    async def on_request(self, request: Any, snapshot: Snapshot) -> None:
        raise NotImplementedError

    async def push(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """The stream is over: give its slot back and drop what the client
        sent (a traceback may hold this object a while longer)."""
        self.outstanding.release()
        self.inbox.clear()
        self.inbox_bytes = 0
        self.types.clear()

    def put(self, item: Any, size: int = 0) -> None:
        self.inbox.append((item, size))
        self.inbox_bytes += size
        self.wake.ring()

    async def read_requests(self) -> None:
        """The reader task: parse each request into the inbox and ring;
        EOF or the read's error last."""
        limit = self.server.limits.inbox_bytes
        try:
            while True:
                while self.inbox_bytes > limit:
                    await self.room.wait()
                raw = await self.context.read()
                if raw is grpc.aio.EOF:
                    self.put(raw)
                    return
                self.server.trimmer.received(len(raw))
                self.put(self.parse(raw), len(raw))
                del raw  # not kept while the next read waits (2,000 idle streams)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the stream is ending and cancelled its reader
            self.put(exc)  # the call was cancelled under the read
        except Exception as exc:  # the stream's task re-raises it
            self.put(exc)

    async def run(self) -> None:
        """Requests and snapshot changes, in arrival order, until the client
        ends the stream (or a request, a read, or a timeout ends it)."""
        cache, node_id, inbox = self.server.cache, self.node_id, self.inbox
        snapshot = None
        while True:
            new = cache.get(node_id)
            moved = new is not None and new is not snapshot and snapshot is not None
            if new is not None:
                snapshot = new
            if snapshot is not None:  # requests wait for the node's first snapshot
                for _ in range(len(inbox)):
                    if is_end(inbox[0][0]):
                        break
                    request, size = inbox.popleft()
                    self.inbox_bytes -= size
                    self.room.ring()
                    await self.on_request(request, snapshot)
                    del request
                if moved or self.deferred:
                    self.deferred = self.outstanding.slow and self.outstanding.unanswered > 0
                    if not self.deferred:
                        await self.push(snapshot)
            if inbox and is_end(inbox[-1][0]):
                end = inbox[-1][0]
                if isinstance(end, BaseException):
                    raise end
                return
            deadline = self.outstanding.deadline()
            if deadline is not None and time.monotonic() >= deadline:
                if self.outstanding.expire():
                    raise TimeoutError("a response went unanswered")
                continue
            await self.wake.wait(deadline)  # loop.time() is time.monotonic()


def is_end(item: Any) -> bool:
    return item is grpc.aio.EOF or isinstance(item, BaseException)
