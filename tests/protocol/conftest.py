"""Protocol-test plumbing: an in-process ADS server, real gRPC clients, and
small builders for realistic Envoy resources.

A mesh here is described by three plain mappings and turned into a
:class:`Snapshot` by :func:`mesh_snapshot`:

* ``services``: service host -> endpoint addresses (one EDS cluster and one
  ClusterLoadAssignment each, named as Istio names them);
* ``routes``: route config name -> the service hosts it routes to (one
  virtual host per service, matched by Host);
* ``listeners``: port -> route config name (an HTTP listener whose
  HttpConnectionManager fetches that route config over ADS).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from sailplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    AdsServer,
    Snapshot,
    SnapshotCache,
    TypeResources,
)
from sailplane.xds.client import AdsClient, resource_name

PORT = 5000


# -- resource builders -----------------------------------------------------
# Self-contained on purpose: protocol tests exercise sailplane.xds alone, so a
# change in sailplane.translate cannot move them.


def socket_address(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def ads_config_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def cluster_name(host: str, port: int = PORT) -> str:
    """Istio's outbound cluster name for a short service name."""
    return f"outbound|{port}||{host}.default.svc.cluster.local"


def eds_cluster(name: str, connect_timeout: float = 1.0) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration(connect_timeout),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    cluster.eds_cluster_config.service_name = name
    return cluster


def static_cluster(name: str, address: str, port: int) -> cluster_pb2.Cluster:
    """An inbound-style cluster with its endpoints inline (no EDS)."""
    lb_endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(address, port))
    )
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(1.0),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb_endpoint])],
        ),
    )


def load_assignment(
    name: str, addresses: Sequence[str], port: int = PORT
) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(address, port))
        )
        for address in addresses
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
    )


def listener_name(port: int) -> str:
    return f"0.0.0.0_{port}"


def http_listener(port: int, route_config_name: str) -> listener_pb2.Listener:
    """An HTTP listener whose routes come over ADS (RDS) by name."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_0.0.0.0_{port}",
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_config_name),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            )
        ],
    )
    return listener_pb2.Listener(
        name=listener_name(port),
        address=socket_address("0.0.0.0", port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=pack(manager),
                    )
                ]
            )
        ],
    )


def route_config(name: str, hosts: Iterable[str], port: int = PORT) -> route_pb2.RouteConfiguration:
    """One virtual host per service, matched by Host, routing to its cluster."""
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=f"{host}.default.svc.cluster.local:{port}",
                domains=[host, f"{host}:{port}", f"{host}.default.svc.cluster.local"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(cluster=cluster_name(host, port)),
                    )
                ],
            )
            for host in sorted(hosts)
        ],
    )


def build_snapshot(
    clusters: Iterable[cluster_pb2.Cluster] = (),
    endpoints: Iterable[endpoint_pb2.ClusterLoadAssignment] = (),
    listeners: Iterable[listener_pb2.Listener] = (),
    routes: Iterable[route_pb2.RouteConfiguration] = (),
) -> Snapshot:
    snapshot = Snapshot(
        {
            CLUSTER: TypeResources.build(CLUSTER, [(c.name, c) for c in clusters]),
            ENDPOINT: TypeResources.build(ENDPOINT, [(e.cluster_name, e) for e in endpoints]),
            LISTENER: TypeResources.build(LISTENER, [(x.name, x) for x in listeners]),
            ROUTE: TypeResources.build(ROUTE, [(r.name, r) for r in routes]),
        }
    )
    assert snapshot.consistent() == []
    return snapshot


def mesh_snapshot(
    services: Mapping[str, Sequence[str]],
    routes: Mapping[str, Iterable[str]],
    listeners: Mapping[int, str],
    connect_timeout: float = 1.0,
) -> Snapshot:
    return build_snapshot(
        clusters=[eds_cluster(cluster_name(host), connect_timeout) for host in services],
        endpoints=[load_assignment(cluster_name(host), addrs) for host, addrs in services.items()],
        listeners=[http_listener(port, route) for port, route in listeners.items()],
        routes=[route_config(name, hosts) for name, hosts in routes.items()],
    )


# The reference mesh of most tests: two services behind one HTTP listener.
SERVICES = {"frontend": ["10.0.0.1"], "backend": ["10.0.1.1", "10.0.1.2"]}
ROUTES = {"5000": ["frontend", "backend"]}
LISTENERS = {5000: "5000"}
EDS_NAMES = sorted(cluster_name(host) for host in SERVICES)
RDS_NAMES = ["5000"]


def reference_snapshot(connect_timeout: float = 1.0) -> Snapshot:
    return mesh_snapshot(SERVICES, ROUTES, LISTENERS, connect_timeout)


def with_reviews(routes_to: str = "reviews") -> Snapshot:
    """The reference mesh plus `reviews`, which has its own listener on 9080;
    5000 routes to ``routes_to`` besides its own services."""
    return mesh_snapshot(
        {**SERVICES, "reviews": ["10.0.2.1"]},
        {"5000": [*ROUTES["5000"], routes_to], "9080": ["reviews"]},
        {**LISTENERS, 9080: "9080"},
    )


# -- reading responses and status ------------------------------------------


def names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    return sorted(resource_name(response.type_url, r.value) for r in response.resources)


async def recv_many(
    client: AdsClient, count: int, timeout: float = 5.0
) -> list[discovery_pb2.DiscoveryResponse]:
    return [await client.recv(timeout) for _ in range(count)]


async def sync(
    client: AdsClient, eds_names: Sequence[str] = EDS_NAMES, rds_names: Sequence[str] = RDS_NAMES
) -> dict[str, discovery_pb2.DiscoveryResponse]:
    """Subscribe like Envoy (wildcard CDS/LDS, EDS/RDS by name), ACK each
    response, and return the response of every type."""
    got: dict[str, discovery_pb2.DiscoveryResponse] = {}
    for type_url, wanted in (
        (CLUSTER, ()),
        (ENDPOINT, eds_names),
        (LISTENER, ()),
        (ROUTE, rds_names),
    ):
        client.request(type_url, wanted)
        response = await client.recv()
        assert response.type_url == type_url
        client.ack(response, wanted)
        got[type_url] = response
    return got


def streams_of(ads: AdsServer, node_id: str) -> list[dict[str, Any]]:
    return [s for s in ads.status.to_json() if s["proxy"] == node_id]


def types_of(ads: AdsServer, node_id: str) -> dict[str, dict[str, Any]]:
    """The /status ``types`` of the node's one open stream."""
    streams = streams_of(ads, node_id)
    assert len(streams) == 1, streams
    types: dict[str, dict[str, Any]] = streams[0]["types"]
    return types


def synced_at(ads: AdsServer, node_id: str, snapshot: Snapshot) -> bool:
    """Every type of the node's one stream is SYNCED at the snapshot's version."""
    return all_synced_at(ads, [node_id], snapshot)


def all_synced_at(ads: AdsServer, node_ids: Iterable[str], snapshot: Snapshot) -> bool:
    """:func:`synced_at` for many nodes, reading /status once."""
    streams: dict[str, list[dict[str, Any]]] = {}
    for stream in ads.status.to_json():
        streams.setdefault(stream["proxy"], []).append(stream)
    for node_id in node_ids:
        found = streams.get(node_id, [])
        if len(found) != 1:
            return False
        types = found[0]["types"]
        for short, type_url in SHORT.items():
            state = types.get(short)
            if state is None or state["state"] != "SYNCED":
                return False
            if not state["sent"] == state["acked"] == snapshot.version(type_url):
                return False
    return True


SHORT = {"clusters": CLUSTER, "endpoints": ENDPOINT, "listeners": LISTENER, "routes": ROUTE}


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it holds; ACKs are processed asynchronously."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


# -- fixtures --------------------------------------------------------------


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def ads(cache: SnapshotCache) -> AdsServer:
    return AdsServer(cache)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[AdsServer], Awaitable[str]]]:
    """Start an in-process gRPC server for an AdsServer; stopped at teardown."""
    servers: list[grpc.aio.Server] = []

    async def start(ads: AdsServer) -> str:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([ads.handler()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(None)


@pytest.fixture
async def target(serve: Callable[[AdsServer], Awaitable[str]], ads: AdsServer) -> str:
    return await serve(ads)


@pytest.fixture
async def connect(target: str) -> AsyncIterator[Callable[..., AdsClient]]:
    """Open AdsClients (to ``target`` unless told otherwise); all closed at teardown."""
    clients: list[AdsClient] = []

    def open_client(
        node_id: str, to: str | None = None, channel: grpc.aio.Channel | None = None
    ) -> AdsClient:
        client = AdsClient(to or target, node_id, channel=channel)
        clients.append(client)
        client.open()
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            await client.close()
