"""What the state-of-the-world and the delta stream have in common: identity,
per-type state, nonces, the push throttle slot, and the make-before-break
question (have listeners and routes been accepted yet?)."""

from __future__ import annotations

import asyncio
import itertools
import logging
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
        # Requests read by the stream's reader task, for its own task to handle.
        self.inbox: list[Any] = []
        self.wake = Wake()
        self._nonces = itertools.count(1)
        self._new_state = new_state
        self.outstanding = Outstanding(
            server.throttle, server.response_timeout, server.slot_timeout
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
