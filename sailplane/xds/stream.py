"""What the state-of-the-world and the delta stream have in common: identity,
per-type state, nonces, the push throttle slot, and the make-before-break
question (have listeners and routes been accepted yet?)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import grpc

from sailplane.xds.push import Outstanding
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.status import StreamStatus
from sailplane.xds.types import LISTENER, ROUTE

if TYPE_CHECKING:
    from sailplane.xds.server import AdsServer

# Removals of clusters and endpoints wait until these are ACKed at their new versions.
REFERRING_TYPES = (LISTENER, ROUTE)


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
        self.reader: Any = None
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

    def _referrers_synced(self, snapshot: Snapshot) -> bool:
        """Have listeners and routes been accepted at the snapshot's versions?"""
        for type_url in REFERRING_TYPES:
            st = self.types.get(type_url)
            if st is None or not st.wanted:
                continue
            if self.status.of(type_url).acked != snapshot.version(type_url):
                return False
        return True
