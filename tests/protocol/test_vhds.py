"""VHDS on delta streams (sailplane/xds/vhds.py, server/vhds.py): a route
table built for it reaches a delta client as a small route config with
``vhds`` plus one VirtualHost ``RC/key`` per virtual host, pushed unasked
right after the route response; a change sends the changed virtual hosts
only; removals, reconnects, NACKs and make before break; state-of-the-world
streams keep the inline table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, Snapshot, SnapshotCache
from sailplane.xds.client import AdsClient
from sailplane.xds.delta_client import DeltaAdsClient
from sailplane.xds.resources import TypeResources
from sailplane.xds.types import VIRTUAL_HOST
from sailplane.xds.vhds import delta_version
from tests.protocol.conftest import (
    EDS_NAMES,
    LISTENERS,
    SERVICES,
    cluster_name,
    eventually,
    mesh_snapshot,
    route_config,
    types_of,
)

NODE = "frontend-v1.default"
FRONTEND, BACKEND = (f"5000/{h}.default.svc.cluster.local:5000" for h in ("frontend", "backend"))


def vhds_snapshot(
    services: Mapping[str, Sequence[str]] = SERVICES,
    routes: Mapping[str, Iterable[str]] | None = None,
    listeners: Mapping[int, str] = LISTENERS,
    backend_cluster: str | None = None,
) -> Snapshot:
    """The reference mesh, its route tables built for VHDS (as the
    controller's shared sidecar tables are); ``backend_cluster`` reroutes
    backend's virtual host (a one-virtual-host change)."""
    routes = routes if routes is not None else {"5000": ["frontend", "backend"]}
    base = mesh_snapshot(services, routes, listeners)
    configs = []
    for name, hosts in routes.items():
        config = route_config(name, hosts)
        for vhost in config.virtual_hosts:
            if backend_cluster and vhost.name.startswith("backend."):
                vhost.routes[0].route.cluster = backend_cluster
        configs.append((name, config.SerializeToString(deterministic=True)))
    resources = dict(base.resources)
    resources[ROUTE] = TypeResources.from_values(ROUTE, configs, vhds=True)
    return Snapshot(resources)


@pytest.fixture
async def connect_delta(target: str) -> AsyncIterator[Callable[..., DeltaAdsClient]]:
    clients: list[DeltaAdsClient] = []

    def open_client(node_id: str = NODE) -> DeltaAdsClient:
        client = DeltaAdsClient(target, node_id)
        clients.append(client)
        client.open()
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            await client.close()


def added(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return sorted(r.name for r in response.resources)


async def subscribe_all(client: DeltaAdsClient, routes: Sequence[str] = ("5000",)) -> None:
    """CDS, EDS, LDS, then RDS: the RDS response and the VHDS one behind it."""
    for type_url, wanted in ((CLUSTER, ()), (ENDPOINT, EDS_NAMES), (LISTENER, ())):
        client.request(type_url, wanted)
        client.ack(await client.recv())
    client.request(ROUTE, routes)


def synced(ads: AdsServer, snapshot: Snapshot) -> bool:
    types = types_of(ads, NODE)
    return all(
        types.get(short, {}).get("state") == "SYNCED"
        and types[short]["acked"] == delta_version(snapshot, url)
        for short, url in (("routes", ROUTE), ("vhosts", VIRTUAL_HOST), ("clusters", CLUSTER))
    )


async def test_route_config_then_its_virtual_hosts_unasked(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    v1 = vhds_snapshot()
    cache.set(NODE, v1)
    client = connect_delta()
    await subscribe_all(client)
    rds = await client.recv()
    assert rds.type_url == ROUTE
    (config,) = (route_pb2.RouteConfiguration.FromString(r.resource.value) for r in rds.resources)
    assert config.name == "5000" and not config.virtual_hosts
    assert config.vhds.config_source.HasField("ads")
    assert config.validate_clusters == route_config("5000", []).validate_clusters
    vhds = await client.recv()  # before the client asked for any
    assert vhds.type_url == VIRTUAL_HOST
    assert added(vhds) == sorted([FRONTEND, BACKEND])
    for resource in vhds.resources:  # the resource name is VirtualHost.name
        vhost = route_components_pb2.VirtualHost.FromString(resource.resource.value)
        assert vhost.name == resource.name and vhost.domains
    client.ack(rds)
    client.ack(vhds)
    client.request(VIRTUAL_HOST)  # Envoy's one empty request: nothing new to send
    await client.expect_silence()
    await eventually(lambda: synced(ads, v1), what="routes and vhosts SYNCED")
    # The client's merged table equals the inline one.
    inline = route_pb2.RouteConfiguration.FromString(
        route_config("5000", ["frontend", "backend"]).SerializeToString()
    )
    merged = client.route_table("5000")
    assert sorted(v.domains[0] for v in merged.virtual_hosts) == sorted(
        v.domains[0] for v in inline.virtual_hosts
    )


async def test_one_virtual_host_change_sends_only_it_and_no_route_config(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    cache.set(NODE, vhds_snapshot())
    client = connect_delta()
    await subscribe_all(client)
    client.ack(await client.recv())
    client.ack(await client.recv())
    client.request(VIRTUAL_HOST)
    full = client.bytes_by_type[VIRTUAL_HOST]

    v2 = vhds_snapshot(backend_cluster=cluster_name("frontend"))
    cache.set(NODE, v2)
    response = await client.recv()
    assert response.type_url == VIRTUAL_HOST
    assert added(response) == [BACKEND] and not response.removed_resources
    client.ack(response)
    await client.expect_silence()  # no route config: it did not change
    assert client.bytes_by_type[VIRTUAL_HOST] - full < full
    assert client.bytes_by_type[ROUTE] < 200
    await eventually(lambda: synced(ads, v2))
    backend = route_components_pb2.VirtualHost.FromString(
        client.view(VIRTUAL_HOST).resources[BACKEND]
    )
    assert backend.routes[0].route.cluster == cluster_name("frontend")


async def test_removed_service_removes_its_virtual_host_before_its_cluster(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    v1 = vhds_snapshot()
    cache.set(NODE, v1)
    client = connect_delta()
    await subscribe_all(client)
    client.ack(await client.recv())
    client.ack(await client.recv())
    # The ACKs handled first: one still waiting when the change comes is
    # answered with the new snapshot, so its virtual hosts would go first.
    await eventually(lambda: synced(ads, v1))

    v2 = vhds_snapshot({"frontend": SERVICES["frontend"]}, {"5000": ["frontend"]})
    cache.set(NODE, v2)
    got = []
    while True:  # ACK all but the virtual hosts
        try:
            response = await client.recv(0.3)
        except TimeoutError:
            break
        got.append(response)
        if response.type_url != VIRTUAL_HOST:
            client.ack(response)
    kinds = [(r.type_url, list(r.removed_resources)) for r in got]
    # Clusters and endpoints are kept until the virtual hosts are ACKed.
    assert kinds == [(CLUSTER, []), (ENDPOINT, []), (VIRTUAL_HOST, [BACKEND])], kinds
    client.ack(got[-1])
    gone = await client.recv()
    assert (gone.type_url, list(gone.removed_resources)) == (CLUSTER, [cluster_name("backend")])
    client.ack(gone)
    client.ack(await client.recv())  # endpoints
    await eventually(lambda: synced(ads, v2))
    assert list(client.view(VIRTUAL_HOST).resources) == [FRONTEND]


async def test_reconnect_honours_initial_resource_versions(
    cache: SnapshotCache, ads: AdsServer, target: str
) -> None:
    cache.set(NODE, vhds_snapshot())
    client = DeltaAdsClient(target, NODE)
    client.open()
    try:
        await subscribe_all(client)
        client.ack(await client.recv())
        client.ack(await client.recv())
        await client.close(channel=False)

        v2 = vhds_snapshot(backend_cluster=cluster_name("frontend"))
        cache.set(NODE, v2)
        client.open()
        # As Envoy does on a new stream: every request at once, VirtualHost's
        # with the versions it kept.
        client.resume(CLUSTER)
        client.resume(ROUTE, ["5000"])
        client.resume(VIRTUAL_HOST)
        responses = {}
        for _ in range(3):
            response = await client.recv()
            responses[response.type_url] = response
            client.ack(response)
        await client.expect_silence()
        assert not responses[ROUTE].resources  # it has the route config
        assert added(responses[VIRTUAL_HOST]) == [BACKEND]  # only the stale one
        await eventually(lambda: synced(ads, v2))
    finally:
        await client.close()


async def test_nack_of_virtual_hosts_is_reported_and_the_next_change_sent(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    cache.set(NODE, vhds_snapshot())
    client = connect_delta()
    await subscribe_all(client)
    client.ack(await client.recv())
    client.ack(await client.recv())
    v2 = vhds_snapshot(backend_cluster=cluster_name("frontend"))
    cache.set(NODE, v2)
    rejected = await client.recv()
    client.nack(rejected, "Only unique values for domains are permitted")
    await eventually(lambda: types_of(ads, NODE)["vhosts"]["state"] == "NACKED")
    vhosts = types_of(ads, NODE)["vhosts"]
    assert vhosts["error"] == "Only unique values for domains are permitted"
    assert vhosts["sent"] == delta_version(v2, VIRTUAL_HOST)
    await client.expect_silence()  # not resent

    v3 = vhds_snapshot()
    cache.set(NODE, v3)
    client.ack(await client.recv())
    await eventually(lambda: synced(ads, v3))


async def test_a_following_client_gets_the_same_table(
    cache: SnapshotCache, ads: AdsServer, target: str
) -> None:
    import asyncio

    cache.set(NODE, vhds_snapshot())
    client = DeltaAdsClient(target, NODE)
    client.open()
    stop = asyncio.Event()
    task = asyncio.create_task(client.follow(stop))
    try:
        await eventually(lambda: BACKEND in client.view(VIRTUAL_HOST).resources)
        await eventually(lambda: synced(ads, vhds_snapshot()))
        assert client.vhds_asked
        assert len(client.route_table("5000").virtual_hosts) == 2
    finally:
        stop.set()
        await task
        await client.close()


async def test_sotw_and_disabled_servers_keep_the_inline_table(
    cache: SnapshotCache, serve: Callable[[AdsServer], object]
) -> None:
    v1 = vhds_snapshot()
    cache.set(NODE, v1)
    for delta in (False, True):
        ads = AdsServer(cache, vhds=False) if delta else AdsServer(cache)
        target = await serve(ads)  # type: ignore[misc]
        if delta:
            client: AdsClient | DeltaAdsClient = DeltaAdsClient(target, NODE)
        else:
            client = AdsClient(target, NODE)
        client.open()
        try:
            client.request(ROUTE, ["5000"])
            response = await client.recv()
            value = response.resources[0]
            raw = value.resource.value if delta else value.value
            config = route_pb2.RouteConfiguration.FromString(raw)
            assert len(config.virtual_hosts) == 2 and not config.HasField("vhds")
            await client.expect_silence()
        finally:
            await client.close()
