"""A small ADS client (state of the world) for protocol tests, load tests and
benchmarks. It is a test double shipped in the package, as STYLE.md asks:
real gRPC, real protobuf, no Envoy.

Two levels:

* :class:`AdsClient` sends exactly the requests you ask for and hands you
  each response: for protocol tests.
* :meth:`AdsClient.follow` behaves like Envoy: wildcard CDS and LDS, EDS for
  every EDS cluster, RDS for every route name in the listeners, ACK
  everything, until stopped: for load tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.rpc import status_pb2

from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, WILDCARD_TYPES

_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
# Many simulated proxies in one process receive the same resource bytes;
# parsing each distinct resource once keeps the clients' CPU out of the way of
# what a benchmark measures (the server).
_PARSE_CACHE = 1 << 16


@dataclass
class TypeView:
    """What the client holds for one type (what it has ACKed)."""

    version: str = ""
    nonce: str = ""
    names: list[str] = field(default_factory=list)
    resources: dict[str, bytes] = field(default_factory=dict)


class AdsClient:
    def __init__(
        self,
        target: str,
        node_id: str,
        metadata: Mapping[str, Any] | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.target = target
        self.node_id = node_id
        self.metadata = dict(metadata or {})
        self._own_channel = channel is None
        self.channel = channel or grpc.aio.insecure_channel(target)
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._call: Any = None
        self._reading: asyncio.Future[Any] | None = None
        self._sent_node = False
        self.views: dict[str, TypeView] = {}
        self.responses = 0
        self.bytes_received = 0

    async def __aenter__(self) -> AdsClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        method = self.channel.stream_stream(
            _METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=lambda b: b,
        )
        self._call = method(self._request_iterator())
        self._reading = None
        self._sent_node = False

    async def _request_iterator(self) -> Any:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    async def close(self) -> None:
        self._requests.put_nowait(None)
        if self._reading is not None:
            self._reading.cancel()
        if self._call is not None:
            self._call.cancel()
        if self._own_channel:
            await self.channel.close()

    # -- protocol-level ----------------------------------------------------

    def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        if not self._sent_node:
            request.node.id = self.node_id
            if self.metadata:
                meta = struct_pb2.Struct()
                meta.update(self.metadata)
                request.node.metadata.CopyFrom(meta)
            self._sent_node = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._requests.put_nowait(request)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        """The next response; raises TimeoutError if none comes.

        A timeout leaves the read pending for the next call: cancelling a
        grpc.aio read cancels the whole RPC, which would end the stream."""
        reading = self._reading
        if reading is None:
            reading = self._reading = asyncio.ensure_future(self._call.read())
        try:
            raw = await asyncio.wait_for(asyncio.shield(reading), timeout)
        finally:
            if reading.done():
                self._reading = None
        if raw is grpc.aio.EOF:
            raise ConnectionError(f"stream ended: {await self._call.code()}")
        self.responses += 1
        self.bytes_received += len(raw)
        return discovery_pb2.DiscoveryResponse.FromString(raw)

    async def expect_silence(self, timeout: float = 0.3) -> None:
        """Assert that no response arrives within ``timeout``."""
        try:
            response = await self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response {response.type_url} v{response.version_info}")

    def ack(
        self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] | None = None
    ) -> None:
        view = self.views.setdefault(response.type_url, TypeView())
        view.version, view.nonce = response.version_info, response.nonce
        values = [r.value for r in response.resources]
        received = {resource_name(response.type_url, v): v for v in values}
        if names is not None:
            view.names = list(names)
        if response.type_url in WILDCARD_TYPES:
            view.resources = received  # clusters and listeners: the whole state each time
        else:
            # Other types may come as just what changed (xDS protocol,
            # "Grouping resources into responses"): what is not in the
            # response stays as it was, while it is still subscribed.
            merged = {**view.resources, **received}
            wanted = set(view.names)
            view.resources = {n: v for n, v in merged.items() if not wanted or n in wanted}
        self.request(response.type_url, view.names, response.version_info, response.nonce)

    def nack(self, response: discovery_pb2.DiscoveryResponse, message: str) -> None:
        view = self.views.setdefault(response.type_url, TypeView())
        view.nonce = response.nonce
        self.request(response.type_url, view.names, view.version, response.nonce, error=message)

    # -- Envoy-like --------------------------------------------------------

    async def follow(self, stop: asyncio.Event | None = None, on_response: Any = None) -> None:
        """Subscribe like Envoy and ACK everything until ``stop`` is set."""
        self.request(CLUSTER)
        self.request(LISTENER)
        stop = stop or asyncio.Event()
        while not stop.is_set():
            reader = asyncio.ensure_future(self.recv(timeout=3600))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:
                reader.cancel()
                stopper.cancel()
                return
            stopper.cancel()
            response = reader.result()
            self.ack(response, self.views.get(response.type_url, TypeView()).names)
            follow_up = dependent_names(response)
            if follow_up is not None:
                dep_type, names = follow_up
                view = self.views.setdefault(dep_type, TypeView())
                if sorted(names) != sorted(view.names):
                    view.names = sorted(names)
                    self.request(dep_type, view.names, view.version, view.nonce)
            if on_response is not None:
                on_response(self, response)

    def synced_versions(self) -> dict[str, str]:
        return {t: v.version for t, v in self.views.items()}


@functools.lru_cache(maxsize=_PARSE_CACHE)
def resource_name(type_url: str, value: bytes) -> str:
    if type_url == ENDPOINT:
        return str(endpoint_pb2.ClusterLoadAssignment.FromString(value).cluster_name)
    # Every other xDS resource has `name` as field 1; parse just enough.
    return str(_NAME_ONLY.FromString(value).value)


# Cluster, Listener, RouteConfiguration and Secret all keep `name` in field 1.
# StringValue has nothing but a string in field 1, so every other field is
# kept aside as unknown. (Parsing as a RouteConfiguration, say, misreads a
# Listener's `address`, field 2, as a VirtualHost and fails.)
_NAME_ONLY = wrappers_pb2.StringValue


def dependent_names(response: discovery_pb2.DiscoveryResponse) -> tuple[str, list[str]] | None:
    """The EDS names a CDS response needs, or the RDS names an LDS response needs."""
    if response.type_url == CLUSTER:
        eds = (_eds_name(resource.value) for resource in response.resources)
        return ENDPOINT, [name for name in eds if name is not None]
    if response.type_url == LISTENER:
        names = [name for r in response.resources for name in _rds_names(r.value)]
        return ROUTE, sorted(set(names))
    return None


@functools.lru_cache(maxsize=_PARSE_CACHE)
def _eds_name(value: bytes) -> str | None:
    cluster = cluster_pb2.Cluster.FromString(value)
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return str(cluster.eds_cluster_config.service_name or cluster.name)


@functools.lru_cache(maxsize=_PARSE_CACHE)
def _rds_names(value: bytes) -> tuple[str, ...]:
    names = []
    listener = listener_pb2.Listener.FromString(value)
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    names.append(manager.rds.route_config_name)
    return tuple(names)
