"""State of the world: listeners and routes wait for a new cluster's
endpoints, but never for long, and never for a client that does not ask.

xDS's order for an addition is the cluster, its endpoints, then what uses
it. A state-of-the-world server cannot send a new cluster's endpoints before
the client subscribes to them, so after a cluster response that adds
clusters it holds listeners and routes back until that request (see
sotw.py), at most ``route_hold`` seconds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, SnapshotCache
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import (
    EDS_NAMES,
    cluster_name,
    eventually,
    listener_name,
    names,
    recv_many,
    reference_snapshot,
    sync,
    synced_at,
    types_of,
    with_reviews,
)

NODE = "frontend-v1.default"
REVIEWS = cluster_name("reviews")
HOLD = 0.6  # seconds; the tests wait for far longer than this, never less


@pytest.fixture
def ads(cache: SnapshotCache) -> AdsServer:
    return AdsServer(cache, route_hold=HOLD)


async def synced(ads: AdsServer, connect: Callable[..., AdsClient]) -> AdsClient:
    client = connect(NODE)
    await sync(client)
    await eventually(lambda: synced_at(ads, NODE, reference_snapshot()))
    return client


async def test_a_client_that_never_asks_gets_its_routes_when_the_hold_ends(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    """The lie: a client that takes the new cluster and never subscribes to
    its endpoints. It is not left without its listeners and routes."""
    cache.set(NODE, reference_snapshot())
    client = await synced(ads, connect)
    v2 = with_reviews()
    assert cache.set(NODE, v2)
    cds, eds = await recv_many(client, 2)
    assert [cds.type_url, eds.type_url] == [CLUSTER, ENDPOINT]
    client.ack(cds)
    client.ack(eds)  # the old subscription: reviews is not asked for
    await client.expect_silence(HOLD / 3)
    assert types_of(ads, NODE)["routes"]["sent"] == reference_snapshot().version(ROUTE)
    lds, rds = await recv_many(client, 2)  # the hold is over
    assert [lds.type_url, rds.type_url] == [LISTENER, ROUTE]
    assert lds.version_info == v2.version(LISTENER)
    assert names(lds) == [listener_name(5000), listener_name(9080)]
    assert rds.version_info == v2.version(ROUTE)
    client.ack(lds)
    client.ack(rds)
    await client.expect_silence()


async def test_changes_during_the_hold_go_out_once_the_endpoints_are_asked_for(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    """A route change while routes are held is not sent on its own: the
    client gets the latest routes once, after the new cluster's endpoints."""
    cache.set(NODE, reference_snapshot())
    client = await synced(ads, connect)
    assert cache.set(NODE, with_reviews())
    cds, eds = await recv_many(client, 2)
    v3 = with_reviews(routes_to="ratings")  # 5000 no longer routes to reviews
    assert v3.version(CLUSTER) == with_reviews().version(CLUSTER)
    assert cache.set(NODE, v3)
    await client.expect_silence(HOLD / 3)

    client.ack(cds)
    client.ack(eds, sorted([*EDS_NAMES, REVIEWS]))
    eds2, lds, rds = await recv_many(client, 3)
    assert [eds2.type_url, lds.type_url, rds.type_url] == [ENDPOINT, LISTENER, ROUTE]
    assert names(eds2) == [REVIEWS]
    assert rds.version_info == v3.version(ROUTE)
    for response in (eds2, lds, rds):
        client.ack(response)
    await eventually(lambda: synced_at(ads, NODE, v3))
    await client.expect_silence(HOLD * 2)  # nothing left over when the hold would have ended


async def test_a_removal_is_not_held(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    """Only additions wait: when a cluster goes, the listeners and routes
    that stop using it come at once (the cluster is kept until they are
    accepted; see test_ordering.py)."""
    cache.set(NODE, with_reviews())
    client = connect(NODE)
    await sync(client, sorted([*EDS_NAMES, REVIEWS]), ["5000", "9080"])
    await eventually(lambda: synced_at(ads, NODE, with_reviews()))
    v2 = reference_snapshot()
    assert cache.set(NODE, v2)
    responses = await recv_many(client, 4, timeout=HOLD / 2)
    assert [r.type_url for r in responses] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
