"""Subscriptions by name, to resources that do not exist yet, and reconnects."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, SnapshotCache
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import (
    EDS_NAMES,
    LISTENERS,
    RDS_NAMES,
    ROUTES,
    SERVICES,
    cluster_name,
    eventually,
    listener_name,
    mesh_snapshot,
    names,
    reference_snapshot,
    streams_of,
    sync,
    synced_at,
)

NODE = "frontend-v1.default"


async def test_named_endpoints_arrive_when_they_appear(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    cache.set(NODE, reference_snapshot())
    client = connect(NODE)
    reviews = cluster_name("reviews")
    wanted = [*EDS_NAMES, reviews]

    client.request(ENDPOINT, wanted)
    first = await client.recv()
    assert first.type_url == ENDPOINT
    assert names(first) == EDS_NAMES  # "reviews" does not exist yet
    client.ack(first, wanted)
    await client.expect_silence()

    # The service appears: its endpoints are sent without the client asking again.
    v2 = mesh_snapshot(
        {**SERVICES, "reviews": ["10.0.2.1"]}, {"5000": [*ROUTES["5000"], "reviews"]}, LISTENERS
    )
    assert cache.set(NODE, v2)
    second = await client.recv()
    assert second.type_url == ENDPOINT  # only what was subscribed: no CDS, RDS
    assert second.version_info == v2.version(ENDPOINT)
    # Just what the client lacks: a state-of-the-world response of a type other
    # than clusters and listeners may carry only the resources that changed.
    assert names(second) == [reviews]
    client.ack(second)
    assert sorted(client.views[ENDPOINT].resources) == sorted(wanted)
    await client.expect_silence()


async def test_listener_by_exact_name_arrives_when_it_appears(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    """gRPC's xDS client asks LDS for its target by name, not by wildcard."""
    cache.set(NODE, reference_snapshot())
    client = connect(NODE)
    wanted = [listener_name(9080)]

    client.request(LISTENER, wanted)
    first = await client.recv()
    assert first.type_url == LISTENER
    assert names(first) == []  # not the wildcard: the existing 0.0.0.0_5000 is not sent
    client.ack(first, wanted)
    await client.expect_silence()

    v2 = mesh_snapshot(
        {**SERVICES, "reviews": ["10.0.2.1"]},
        {**ROUTES, "9080": ["reviews"]},
        {**LISTENERS, 9080: "9080"},
    )
    assert cache.set(NODE, v2)
    second = await client.recv()
    assert second.type_url == LISTENER
    assert second.version_info == v2.version(LISTENER)
    assert names(second) == wanted
    client.ack(second)
    await client.expect_silence()


@pytest.mark.parametrize("carry_nonce", [False, True], ids=["no-nonce", "old-stream-nonce"])
async def test_reconnect_resumes_on_a_new_stream(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient], carry_nonce: bool
) -> None:
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    first = connect(NODE)
    had = await sync(first)
    await eventually(lambda: synced_at(ads, NODE, v1))
    (old_stream,) = streams_of(ads, NODE)

    await first.close()
    await eventually(lambda: not streams_of(ads, NODE), what="old stream gone")
    # The configuration moves on while the proxy is away.
    v2 = mesh_snapshot({**SERVICES, "backend": ["10.0.1.3"]}, ROUTES, LISTENERS)
    assert cache.set(NODE, v2)

    # Like Envoy after a reconnect: every subscription again, with the version
    # it holds and no nonce (nonces belong to the old stream). Some clients keep
    # the old nonce; on a stream that has sent nothing yet it cannot be stale.
    second = connect(NODE)
    subscriptions = {CLUSTER: [], ENDPOINT: EDS_NAMES, LISTENER: [], ROUTE: RDS_NAMES}
    for type_url, wanted in subscriptions.items():
        nonce = had[type_url].nonce if carry_nonce else ""
        second.request(type_url, wanted, version=had[type_url].version_info, nonce=nonce)
    responses = {}
    for _ in subscriptions:
        response = await second.recv()
        responses[response.type_url] = response
        second.ack(response, subscriptions[response.type_url])
    assert set(responses) == set(subscriptions)
    for type_url, response in responses.items():
        assert response.version_info == v2.version(type_url)
    assert names(responses[ENDPOINT]) == EDS_NAMES

    await eventually(lambda: synced_at(ads, NODE, v2), what="new stream SYNCED")
    (new_stream,) = streams_of(ads, NODE)
    assert new_stream["stream"] != old_stream["stream"]
    await second.expect_silence()


async def test_unsubscribed_type_gets_nothing_more(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect(NODE)
    got = await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))

    # An empty list of names on EDS (not a wildcard type) unsubscribes.
    client.ack(got[ENDPOINT], [])
    await client.expect_silence()

    # Endpoints change: nothing is sent. Clusters change: CDS alone, no EDS after it.
    assert cache.set(NODE, mesh_snapshot({**SERVICES, "backend": ["10.0.1.8"]}, ROUTES, LISTENERS))
    await client.expect_silence()
    v3 = mesh_snapshot({**SERVICES, "backend": ["10.0.1.8"]}, ROUTES, LISTENERS, 3.0)
    assert cache.set(NODE, v3)
    cds = await client.recv()
    assert (cds.type_url, cds.version_info) == (CLUSTER, v3.version(CLUSTER))
    client.ack(cds)
    await client.expect_silence()

    # Subscribing again gets the current endpoints.
    client.ack(got[ENDPOINT], EDS_NAMES)
    eds = await client.recv()
    assert (eds.type_url, eds.version_info) == (ENDPOINT, v3.version(ENDPOINT))
    assert names(eds) == EDS_NAMES
    client.ack(eds)
    await eventually(lambda: synced_at(ads, NODE, v3))
