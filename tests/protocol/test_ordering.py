"""Push order and make before break: clusters before endpoints before
listeners before routes when adding; removals wait for the referrers."""

from __future__ import annotations

import functools
from collections.abc import Callable

from envoy.config.route.v3 import route_components_pb2, route_pb2

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, Snapshot, SnapshotCache
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import (
    EDS_NAMES,
    LISTENERS,
    RDS_NAMES,
    ROUTES,
    SERVICES,
    build_snapshot,
    cluster_name,
    eds_cluster,
    eventually,
    http_listener,
    listener_name,
    load_assignment,
    mesh_snapshot,
    names,
    recv_many,
    reference_snapshot,
    route_config,
    static_cluster,
    sync,
    synced_at,
    types_of,
    with_reviews,
)

NODE = "frontend-v1.default"
PUSH_ORDER = [CLUSTER, ENDPOINT, LISTENER, ROUTE]
REVIEWS = cluster_name("reviews")


async def test_removed_cluster_stays_until_listeners_and_routes_are_acked(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = with_reviews()
    cache.set(NODE, v1)
    client = connect(NODE)
    eds_names = sorted([*EDS_NAMES, REVIEWS])
    rds_names = ["5000", "9080"]
    await sync(client, eds_names, rds_names)
    await eventually(lambda: synced_at(ads, NODE, v1))

    v2 = reference_snapshot()  # reviews, its listener and its routes are gone
    assert cache.set(NODE, v2)
    cds, eds, lds, rds = await recv_many(client, 4)
    assert [r.type_url for r in (cds, eds, lds, rds)] == PUSH_ORDER
    # Clusters and endpoints still carry reviews: the old route may still use it.
    assert names(cds) == eds_names
    assert cds.version_info != v2.version(CLUSTER)  # not v2's clusters yet
    assert names(eds) == eds_names
    assert names(lds) == [listener_name(5000)]
    assert lds.version_info == v2.version(LISTENER)
    assert names(rds) == RDS_NAMES
    assert rds.version_info == v2.version(ROUTE)
    await client.expect_silence()

    # Nothing is removed before the new listeners *and* routes are accepted.
    client.ack(cds)
    client.ack(eds)
    await client.expect_silence()
    client.ack(lds)
    await client.expect_silence()
    client.ack(rds)

    cds2, eds2 = await recv_many(client, 2)
    assert [cds2.type_url, eds2.type_url] == [CLUSTER, ENDPOINT]
    assert names(cds2) == EDS_NAMES
    assert cds2.version_info == v2.version(CLUSTER)
    assert names(eds2) == EDS_NAMES
    assert eds2.version_info == v2.version(ENDPOINT)
    assert not synced_at(ads, NODE, v2)  # the removal is not ACKed yet
    client.ack(cds2)
    client.ack(eds2)
    await eventually(lambda: synced_at(ads, NODE, v2), what="SYNCED at v2")
    await client.expect_silence()


async def test_unsubscribed_routes_do_not_hold_back_a_removal(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = with_reviews()
    cache.set(NODE, v1)
    client = connect(NODE)
    eds_names = sorted([*EDS_NAMES, REVIEWS])
    got = await sync(client, eds_names, ["5000", "9080"])
    await eventually(lambda: synced_at(ads, NODE, v1))
    client.ack(got[ROUTE], [])  # the client drops every route subscription
    await client.expect_silence()

    v2 = reference_snapshot()
    assert cache.set(NODE, v2)
    cds, eds, lds = await recv_many(client, 3)  # no RDS: nothing is subscribed
    assert [cds.type_url, eds.type_url, lds.type_url] == [CLUSTER, ENDPOINT, LISTENER]
    assert REVIEWS in names(cds)  # the listener still refers to it
    for response in (cds, eds, lds):
        client.ack(response)

    # Listeners are ACKed and no route is subscribed: reviews can go.
    cds2, eds2 = await recv_many(client, 2)
    assert [cds2.type_url, eds2.type_url] == [CLUSTER, ENDPOINT]
    assert names(cds2) == EDS_NAMES
    assert cds2.version_info == v2.version(CLUSTER)
    assert names(eds2) == EDS_NAMES
    await client.expect_silence()


async def test_unreferenced_cluster_is_removed_at_once(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    # "legacy" has a cluster but no route points at it.
    v1 = mesh_snapshot({**SERVICES, "legacy": ["10.0.9.1"]}, ROUTES, LISTENERS)
    cache.set(NODE, v1)
    client = connect(NODE)
    eds_names = sorted([*EDS_NAMES, cluster_name("legacy")])
    await sync(client, eds_names)
    await eventually(lambda: synced_at(ads, NODE, v1))

    v2 = reference_snapshot()  # listeners and routes unchanged (and ACKed)
    assert v2.version(LISTENER) == v1.version(LISTENER)
    assert v2.version(ROUTE) == v1.version(ROUTE)
    assert cache.set(NODE, v2)
    cds, eds = await recv_many(client, 2)
    assert [cds.type_url, eds.type_url] == [CLUSTER, ENDPOINT]
    assert names(cds) == EDS_NAMES
    assert cds.version_info == v2.version(CLUSTER)
    assert names(eds) == EDS_NAMES
    assert eds.version_info == v2.version(ENDPOINT)
    client.ack(cds)
    client.ack(eds)
    await eventually(lambda: synced_at(ads, NODE, v2))
    await client.expect_silence()


async def test_added_cluster_arrives_before_the_listener_that_uses_it(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    """xDS's order for an addition: the cluster, then its endpoints, then
    the listeners and routes that use it. In state of the world the new
    cluster's endpoints can only follow the client's request for them, so
    listeners and routes wait for that request."""
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect(NODE)
    await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))

    v2 = with_reviews()
    assert cache.set(NODE, v2)
    cds, eds = await recv_many(client, 2)
    assert [cds.type_url, eds.type_url] == [CLUSTER, ENDPOINT]
    assert REVIEWS in names(cds)
    assert cds.version_info == v2.version(CLUSTER)
    await client.expect_silence()  # no listener or route names reviews yet

    # Envoy then subscribes to the new cluster's endpoints; they come first,
    # then the listeners and routes that waited for them.
    client.ack(cds)
    client.ack(eds, sorted([*EDS_NAMES, REVIEWS]))
    eds2, lds, rds = await recv_many(client, 3)
    assert [eds2.type_url, lds.type_url, rds.type_url] == [ENDPOINT, LISTENER, ROUTE]
    assert REVIEWS in names(eds2)
    assert names(lds) == [listener_name(5000), listener_name(9080)]
    assert names(rds) == RDS_NAMES  # 9080's routes are not subscribed yet
    client.ack(eds2)
    client.ack(lds)
    client.ack(rds, ["5000", "9080"])
    rds2 = await client.recv()
    assert rds2.type_url == ROUTE
    assert names(rds2) == ["9080"]  # what the subscription gained; 5000 it has
    client.ack(rds2)
    await eventually(lambda: synced_at(ads, NODE, v2))
    await client.expect_silence()


async def test_a_cluster_response_that_only_adds_is_not_followed_by_every_assignment(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    """Adding a service sends its cluster; the endpoints response after it
    carries only what changed of what was subscribed (nothing here), not
    every assignment again: Envoy asks for the new cluster's assignment
    itself, and a full EDS response would be parsed before it asks."""
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect(NODE)
    await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))

    v2 = with_reviews()
    assert cache.set(NODE, v2)
    cds, eds = await recv_many(client, 2)
    assert [cds.type_url, eds.type_url] == [CLUSTER, ENDPOINT]
    assert names(eds) == []
    client.ack(cds)
    client.ack(eds, sorted([*EDS_NAMES, REVIEWS]))
    eds2, lds, rds = await recv_many(client, 3)
    assert eds2.type_url == ENDPOINT
    assert names(eds2) == [REVIEWS]  # what the subscription gained, not all again
    client.ack(eds2)
    client.ack(lds)
    client.ack(rds, ["5000", "9080"])
    client.ack(await client.recv())
    await eventually(lambda: synced_at(ads, NODE, v2))
    await client.expect_silence()


async def test_endpoints_follow_every_cluster_response(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect(NODE)
    got = await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))
    nonces = {got[ENDPOINT].nonce}

    for timeout in (0.5, 2.0):  # two cluster-only changes, endpoints unchanged
        snapshot = reference_snapshot(connect_timeout=timeout)
        assert snapshot.version(ENDPOINT) == v1.version(ENDPOINT)
        assert cache.set(NODE, snapshot)
        cds, eds = await recv_many(client, 2)
        assert [cds.type_url, eds.type_url] == [CLUSTER, ENDPOINT]
        assert cds.version_info == snapshot.version(CLUSTER)
        assert eds.version_info == v1.version(ENDPOINT)  # same content, sent again
        assert names(eds) == EDS_NAMES
        assert eds.nonce not in nonces
        nonces.add(eds.nonce)
        client.ack(cds)
        client.ack(eds)
        await eventually(functools.partial(synced_at, ads, NODE, snapshot))
        await client.expect_silence()


def with_inbound(port: int = 9080) -> Snapshot:
    """The reference mesh plus an inbound listener whose routes go to a STATIC
    cluster (endpoints inline, so nothing of it is in EDS)."""
    inbound = f"inbound|{port}||"
    route = route_pb2.RouteConfiguration(
        name=inbound,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="inbound|http|9080",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(cluster=inbound),
                    )
                ],
            )
        ],
    )
    return build_snapshot(
        clusters=[
            *(eds_cluster(cluster_name(host)) for host in SERVICES),
            static_cluster(inbound, "127.0.0.1", port),
        ],
        endpoints=[load_assignment(cluster_name(h), a) for h, a in SERVICES.items()],
        listeners=[http_listener(5000, "5000"), http_listener(port, inbound)],
        routes=[route_config("5000", ROUTES["5000"]), route],
    )


async def test_endpoints_follow_a_deferred_cluster_removal(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = with_inbound()
    cache.set(NODE, v1)
    client = connect(NODE)
    rds_names = ["5000", "inbound|9080||"]
    await sync(client, EDS_NAMES, rds_names)
    await eventually(lambda: synced_at(ads, NODE, v1))

    v2 = reference_snapshot()  # the inbound listener, its routes and cluster go
    assert v2.version(ENDPOINT) == v1.version(ENDPOINT)
    assert cache.set(NODE, v2)
    cds, eds, lds, rds = await recv_many(client, 4)
    assert [r.type_url for r in (cds, eds, lds, rds)] == PUSH_ORDER
    assert "inbound|9080||" in names(cds)  # kept until the listener is gone
    for response in (cds, eds, lds, rds):
        client.ack(response)

    # The removal is its own cluster response, and endpoints follow it too.
    cds2, eds2 = await recv_many(client, 2)
    assert [cds2.type_url, eds2.type_url] == [CLUSTER, ENDPOINT]
    assert names(cds2) == EDS_NAMES
    assert cds2.version_info == v2.version(CLUSTER)
    assert eds2.version_info == v2.version(ENDPOINT)
    client.ack(cds2)
    client.ack(eds2)
    await eventually(lambda: synced_at(ads, NODE, v2))
    assert types_of(ads, NODE)["clusters"]["error"] is None
    await client.expect_silence()
