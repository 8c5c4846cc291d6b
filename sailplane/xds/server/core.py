"""The Aggregated Discovery Service on grpc.aio: :class:`AdsServer`.

It answers ``StreamAggregatedResources`` (state of the world, sotw.py) and
``DeltaAggregatedResources`` (incremental, delta.py). Both kinds of stream
share their life (lifecycle.py, stream.py), the status registry and the
push throttle (push.py): a stream that leaves a response unanswered for
``response_timeout`` is closed.

Admission comes before expensive work (see limits.py): a stream is counted
against its peer host before anything is read, and against its node id once
the node is read from the first request's own bytes; only a stream the
admission hooks admitted has its requests parsed, its names shared, its
state kept. Requests reach the handler as bytes, and responses leave it as
bytes assembled from pre-encoded pieces: both gRPC serialisers are the
identity function.

The server holds the options and what its streams share; each stream gets
a :class:`StreamContext` with what it needs, never the server itself.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable

import grpc

from sailplane.xds.diff import Diffs
from sailplane.xds.server.context import Context, SnapshotSource, StreamContext
from sailplane.xds.server.delta import DeltaStream, new_unions
from sailplane.xds.server.hooks import AdmissionHooks, AdmitAll, ObservationHooks, Unobserved
from sailplane.xds.server.lifecycle import Gate, StreamFactory, WriteWatch, handle
from sailplane.xds.server.limits import StreamCounts, StreamLimits
from sailplane.xds.server.memory import HeapTrimmer
from sailplane.xds.server.push import (
    DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_SLOT_TIMEOUT,
    PushThrottle,
)
from sailplane.xds.server.sotw import DEFAULT_ROUTE_HOLD, SotwStream, new_partials
from sailplane.xds.server.status import StatusRegistry

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# "0" turns VHDS for delta streams off (AdsServer's ``vhds``).
VHDS_ENV = "SAILPLANE_VHDS"


class AdsServer:
    """Serves ADS streams from a :class:`SnapshotSource` (a
    :class:`~sailplane.xds.cache.SnapshotCache`)."""

    def __init__(
        self,
        source: SnapshotSource,
        *,
        admission: AdmissionHooks | None = None,
        observer: ObservationHooks | None = None,
        status: StatusRegistry | None = None,
        write_timeout: float = 30.0,
        throttle: PushThrottle | None = None,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        slot_timeout: float = DEFAULT_SLOT_TIMEOUT,
        unproven_slot_timeout: float | None = None,
        limits: StreamLimits | None = None,
        vhds: bool | None = None,
        route_hold: float = DEFAULT_ROUTE_HOLD,
    ) -> None:
        """``admission``: who may have a stream, from which cache key
        (default: any node, by its id); ``observer``: told of every response,
        ACK and NACK (default: nobody); ``throttle``: at most so many streams
        with responses in flight (default :class:`PushThrottle`'s);
        ``response_timeout``: a stream that leaves a response unanswered this
        long is closed; ``slot_timeout``: it gives up its throttle slot after
        this long, ``unproven_slot_timeout`` (default the shorter of it and
        3 s) if it never answered one in time (see push.py); ``limits``: what
        one client may cost (see limits.py); ``vhds``: serve delta streams
        the route tables built for it over VHDS (default: unless the
        environment sets ``SAILPLANE_VHDS=0``; see vhds.py); ``route_hold``:
        the longest a state-of-the-world stream holds listeners and routes
        back for the endpoints of clusters it was just sent (see sotw.py)."""
        self.source = source
        self.admission: AdmissionHooks = admission or AdmitAll()
        self.observer: ObservationHooks = observer or Unobserved()
        self.status = status or StatusRegistry()
        # A client that stops reading must not hold its stream (and memory)
        # for ever: past write_timeout its stream is given up.
        self.writes = WriteWatch(write_timeout)
        self.throttle = throttle if throttle is not None else PushThrottle()
        self.response_timeout = response_timeout
        self.slot_timeout = slot_timeout
        self.unproven_slot_timeout = unproven_slot_timeout
        self.counts = StreamCounts(limits or StreamLimits())
        self.vhds = os.environ.get(VHDS_ENV, "1") != "0" if vhds is None else vhds
        self.route_hold = route_hold
        self.trimmer = HeapTrimmer()
        self.stream_ids = itertools.count(1)
        # Shared by every stream of this server (see diff.py, delta.py).
        self.diffs = Diffs()
        self.unions = new_unions()
        self.partials = new_partials()

    @property
    def limits(self) -> StreamLimits:
        return self.counts.limits

    @limits.setter
    def limits(self, limits: StreamLimits) -> None:
        """For streams opened from now on (streams already counted stay
        counted, and keep the limits they were admitted under)."""
        self.counts.limits = limits

    def handler(self) -> grpc.GenericRpcHandler:
        identity: Callable[[bytes], bytes] = lambda body: body  # noqa: E731
        return grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                # Requests are parsed by the stream once it is admitted.
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_aggregated_resources,
                    request_deserializer=identity,
                    response_serializer=identity,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.delta_aggregated_resources,
                    request_deserializer=identity,
                    response_serializer=identity,
                ),
            },
        )

    def stream_context(self) -> StreamContext:
        """What a stream admitted now gets of this server."""
        return StreamContext(
            source=self.source,
            observer=self.observer,
            write=self.writes.write,
            limits=self.limits,
            throttle=self.throttle,
            response_timeout=self.response_timeout,
            slot_timeout=self.slot_timeout,
            unproven_slot_timeout=self.unproven_slot_timeout,
            trimmer=self.trimmer,
            diffs=self.diffs,
            unions=self.unions,
            partials=self.partials,
            vhds=self.vhds,
            route_hold=self.route_hold,
        )

    async def stream_aggregated_resources(
        self, request_iterator: AsyncIterator[bytes], context: Context
    ) -> None:
        await self._handle(context, SotwStream, delta=False)

    async def delta_aggregated_resources(
        self, request_iterator: AsyncIterator[bytes], context: Context
    ) -> None:
        await self._handle(context, DeltaStream, delta=True)

    async def _handle(self, context: Context, new_stream: StreamFactory, delta: bool) -> None:
        gate = Gate(self.admission, self.counts, self.status, self.stream_ids)
        await handle(context, new_stream, delta, gate, self.stream_context())


__all__ = ["ADS_SERVICE", "AdsServer"]
