"""A delta ADS client (``DeltaAggregatedResources``) for protocol tests and
benchmarks: the incremental counterpart of :mod:`sailplane.xds.client`.

* :class:`DeltaAdsClient` sends exactly the requests you ask for and hands you
  each response; it keeps what the client holds (name -> version, bytes) as
  Envoy does, applying added and removed resources.
* :meth:`DeltaAdsClient.follow` behaves like Envoy: wildcard CDS and LDS,
  EDS subscribed for every EDS cluster (and unsubscribed when it goes), RDS
  for every route name in the listeners, ACK everything, until stopped.
* VHDS as Envoy 1.40 does it: after the first route config with ``vhds``,
  one empty VirtualHost request per stream (never one naming anything);
  a VirtualHost ``RC/key`` is kept only while RC is a route config held with
  ``vhds`` (others, and removals outside them, are ignored but ACKed);
  :meth:`DeltaAdsClient.route_table` merges them as Envoy does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from sailplane.xds.client import _eds_name, _rds_names
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST

_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


@dataclass
class DeltaView:
    """What the client holds for one type."""

    subscribed: set[str] = field(default_factory=set)
    versions: dict[str, str] = field(default_factory=dict)
    resources: dict[str, bytes] = field(default_factory=dict)
    system_version: str = ""


class DeltaAdsClient:
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
        self._requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        self._call: Any = None
        self._reading: asyncio.Future[Any] | None = None
        self._sent_node = False
        self.views: dict[str, DeltaView] = {}
        self.responses = 0
        self.bytes_received = 0
        self.bytes_by_type: dict[str, int] = {}
        self.vhds_asked = False  # this stream's one VirtualHost request was sent

    async def __aenter__(self) -> DeltaAdsClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def view(self, type_url: str) -> DeltaView:
        return self.views.setdefault(type_url, DeltaView())

    def open(self) -> None:
        """Open a (new) stream. The views are kept: pass them as
        ``initial_resource_versions`` with :meth:`resume`."""
        method = self.channel.stream_stream(
            _METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=lambda b: b,
        )
        self._requests = asyncio.Queue()
        self._call = method(self._request_iterator(self._requests))
        self._reading = None
        self._sent_node = False
        self.vhds_asked = False

    @staticmethod
    async def _request_iterator(
        requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None],
    ) -> Any:
        while True:
            request = await requests.get()
            if request is None:
                return
            yield request

    async def close(self, channel: bool = True) -> None:
        self._requests.put_nowait(None)
        if self._reading is not None:
            self._reading.cancel()
        if self._call is not None:
            self._call.cancel()
        if channel and self._own_channel:
            await self.channel.close()

    # -- protocol-level ----------------------------------------------------

    def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        nonce: str = "",
        error: str | None = None,
        initial_versions: Mapping[str, str] | None = None,
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
        if initial_versions:
            request.initial_resource_versions.update(initial_versions)
        view = self.view(type_url)
        view.subscribed |= set(request.resource_names_subscribe)
        view.subscribed -= set(request.resource_names_unsubscribe)
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

    def resume(self, type_url: str, subscribe: Iterable[str] = ()) -> None:
        """First request of a type on a new stream, telling the server what the
        client kept (``initial_resource_versions``)."""
        self.request(type_url, subscribe, initial_versions=dict(self.view(type_url).versions))

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DeltaDiscoveryResponse:
        """The next response (not applied: see :meth:`ack`); TimeoutError if none.
        A timeout leaves the read pending for the next call."""
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
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        self.bytes_by_type[response.type_url] = self.bytes_by_type.get(response.type_url, 0) + len(
            raw
        )
        return response

    async def expect_silence(self, timeout: float = 0.3) -> None:
        try:
            response = await self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(
            f"unexpected response {response.type_url} v{response.system_version_info}"
        )

    def apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        view = self.view(response.type_url)
        vhds = self.vhds_route_configs() if response.type_url == VIRTUAL_HOST else None
        for resource in response.resources:
            if vhds is not None and resource.name.rpartition("/")[0] not in vhds:
                continue  # Envoy drops what no VHDS route config claims
            view.versions[resource.name] = resource.version
            view.resources[resource.name] = resource.resource.value
        for name in response.removed_resources:
            if vhds is not None and name.rpartition("/")[0] not in vhds:
                continue
            view.versions.pop(name, None)
            view.resources.pop(name, None)
        view.system_version = response.system_version_info
        if response.type_url == ROUTE:
            self._forget_vhosts()

    # -- VHDS ----------------------------------------------------------------

    def vhds_route_configs(self) -> set[str]:
        """Names of the route configs held that take their virtual hosts from VHDS."""
        return {
            name
            for name, value in self.view(ROUTE).resources.items()
            if route_pb2.RouteConfiguration.FromString(value).HasField("vhds")
        }

    def _forget_vhosts(self) -> None:
        """Virtual hosts go with their route config, or with its ``vhds``."""
        vhosts = self.views.get(VIRTUAL_HOST)
        if vhosts is None or not vhosts.resources:
            return
        vhds = self.vhds_route_configs()
        for name in [n for n in vhosts.resources if n.rpartition("/")[0] not in vhds]:
            vhosts.versions.pop(name, None)
            vhosts.resources.pop(name, None)

    def route_table(self, name: str) -> route_pb2.RouteConfiguration:
        """Route config ``name`` as Envoy applies it: its inline virtual hosts
        and, with ``vhds``, the VirtualHosts ``name/*`` held."""
        config = route_pb2.RouteConfiguration.FromString(self.view(ROUTE).resources[name])
        if config.HasField("vhds"):
            held = self.view(VIRTUAL_HOST).resources
            config.virtual_hosts.extend(
                route_components_pb2.VirtualHost.FromString(held[n])
                for n in sorted(held)
                if n.rpartition("/")[0] == name
            )
        return config

    def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        """Apply the response and ACK it."""
        self.apply(response)
        self.request(response.type_url, nonce=response.nonce)

    def nack(self, response: discovery_pb2.DeltaDiscoveryResponse, message: str) -> None:
        self.request(response.type_url, nonce=response.nonce, error=message)

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
            stopper.cancel()
            if reader not in done:
                reader.cancel()
                return
            response = reader.result()
            self.ack(response)
            self._follow_up(response)
            if on_response is not None:
                on_response(self, response)

    def _follow_up(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        """(Un)subscribe EDS after CDS, RDS after LDS, as Envoy does."""
        if response.type_url == CLUSTER:
            values = self.view(CLUSTER).resources.values()
            wanted = {name for value in values if (name := _eds_name(value)) is not None}
            dependent = ENDPOINT
        elif response.type_url == LISTENER:
            values = self.view(LISTENER).resources.values()
            wanted = {name for value in values for name in _rds_names(value)}
            dependent = ROUTE
        elif response.type_url == ROUTE:
            if not self.vhds_asked and self.vhds_route_configs():
                self.vhds_asked = True
                self.resume(VIRTUAL_HOST)  # empty; what it kept on a new stream
            return
        else:
            return
        have = self.view(dependent).subscribed
        added, gone = sorted(wanted - have), sorted(have - wanted)
        if added or gone:
            self.request(dependent, added, gone)
