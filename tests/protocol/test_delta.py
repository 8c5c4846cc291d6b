"""Delta (incremental) ADS: subscribe, unsubscribe, wildcard, reconnect with
initial_resource_versions, removals, ACK/NACK status, make before break."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, SnapshotCache
from sailplane.xds.delta_client import DeltaAdsClient
from tests.protocol.conftest import (
    EDS_NAMES,
    LISTENERS,
    RDS_NAMES,
    ROUTES,
    SERVICES,
    cluster_name,
    eventually,
    mesh_snapshot,
    reference_snapshot,
    synced_at,
    types_of,
)

NODE = "frontend-v1.default"


@pytest.fixture
async def connect_delta(target: str) -> AsyncIterator[Callable[..., DeltaAdsClient]]:
    clients: list[DeltaAdsClient] = []

    def open_client(node_id: str) -> DeltaAdsClient:
        client = DeltaAdsClient(target, node_id)
        clients.append(client)
        client.open()
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            await client.close()


def added(response: object) -> list[str]:
    return sorted(r.name for r in response.resources)  # type: ignore[attr-defined]


async def drain(client: DeltaAdsClient) -> list[discovery_pb2.DeltaDiscoveryResponse]:
    """ACK responses until none comes for a while."""
    got: list[discovery_pb2.DeltaDiscoveryResponse] = []
    while True:
        try:
            response = await client.recv(0.3)
        except TimeoutError:
            return got
        client.ack(response)
        got.append(response)


async def delta_sync(client: DeltaAdsClient) -> None:
    """Subscribe like Envoy (wildcard CDS/LDS, EDS/RDS by name), ACK each."""
    for type_url, wanted in (
        (CLUSTER, ()),
        (ENDPOINT, EDS_NAMES),
        (LISTENER, ()),
        (ROUTE, RDS_NAMES),
    ):
        client.request(type_url, wanted)
        response = await client.recv()
        assert response.type_url == type_url
        client.ack(response)


async def test_wildcard_and_named_subscriptions_sync(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect_delta(NODE)
    client.request(CLUSTER)  # an empty first request for clusters: legacy wildcard
    cds = await client.recv()
    assert (cds.type_url, cds.system_version_info) == (CLUSTER, v1.version(CLUSTER))
    assert added(cds) == EDS_NAMES
    assert all(r.version == v1.get(CLUSTER).resource_version(r.name) for r in cds.resources)
    assert not cds.removed_resources
    client.ack(cds)

    client.request(ENDPOINT, [EDS_NAMES[0]])
    eds = await client.recv()
    assert added(eds) == [EDS_NAMES[0]]  # only what was subscribed
    client.ack(eds)
    client.request(ENDPOINT, [EDS_NAMES[1]])  # subscriptions add up
    eds2 = await client.recv()
    assert added(eds2) == [EDS_NAMES[1]]
    client.ack(eds2)

    client.request(LISTENER, ["*"])  # explicit wildcard
    lds = await client.recv()
    client.ack(lds)
    client.request(ROUTE, RDS_NAMES)
    client.ack(await client.recv())
    await eventually(lambda: synced_at(ads, NODE, v1), what="delta stream SYNCED")
    assert ads.status.to_json()[0]["protocol"] == "delta"
    await client.expect_silence()


async def test_change_sends_only_changed_resources_and_removals(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    cache.set(NODE, reference_snapshot())
    client = connect_delta(NODE)
    await delta_sync(client)

    # backend's endpoints move; frontend's do not.
    moved = {**SERVICES, "backend": ["10.0.1.9"]}
    v2 = mesh_snapshot(moved, ROUTES, LISTENERS)
    assert cache.set(NODE, v2)
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    assert added(eds) == [cluster_name("backend")]
    client.ack(eds)
    await client.expect_silence()
    await eventually(lambda: synced_at(ads, NODE, v2))

    # reviews appears (subscribed), then disappears: removed_resources, after
    # the routes that pointed at it are ACKed (make before break).
    v3 = mesh_snapshot(
        {**moved, "reviews": ["10.0.2.1"]}, {"5000": [*ROUTES["5000"], "reviews"]}, LISTENERS
    )
    cache.set(NODE, v3)
    cds = await client.recv()
    assert added(cds) == [cluster_name("reviews")]
    client.ack(cds)
    client.request(ENDPOINT, [cluster_name("reviews")])
    responses = await drain(client)
    assert {r.type_url for r in responses} == {ENDPOINT, ROUTE}
    assert cluster_name("reviews") in client.view(ENDPOINT).versions
    await eventually(lambda: synced_at(ads, NODE, v3))

    v4 = mesh_snapshot(moved, ROUTES, LISTENERS)
    cache.set(NODE, v4)
    responses = await drain(client)
    kinds = [(r.type_url, list(r.removed_resources)) for r in responses]
    gone = [cluster_name("reviews")]
    # Clusters and endpoints are kept (an empty "+keep" response) until the
    # routes that used them are ACKed; then they are removed.
    assert kinds == [(CLUSTER, []), (ENDPOINT, []), (ROUTE, []), (CLUSTER, gone), (ENDPOINT, gone)]
    assert "+keep." in responses[0].system_version_info
    await eventually(lambda: synced_at(ads, NODE, v4))
    assert cluster_name("reviews") not in client.view(CLUSTER).versions


async def test_unsubscribe_stops_updates_and_unknown_unsubscribes_are_ignored(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    cache.set(NODE, reference_snapshot())
    client = connect_delta(NODE)
    await delta_sync(client)
    backend = cluster_name("backend")

    client.request(ENDPOINT, unsubscribe=[backend, "never-subscribed"])
    await client.expect_silence()  # nothing to send for an unsubscribe
    v2 = mesh_snapshot({**SERVICES, "backend": ["10.0.1.9"]}, ROUTES, LISTENERS)
    cache.set(NODE, v2)
    # backend moved, but no one is subscribed: an empty response moves the version on.
    eds = await client.recv()
    assert eds.type_url == ENDPOINT and not eds.resources and not eds.removed_resources
    client.ack(eds)
    await client.expect_silence()

    client.request(ENDPOINT, [backend])  # subscribed again: sent again, at v2
    again = await client.recv()
    assert added(again) == [backend]
    assert again.resources[0].version == v2.get(ENDPOINT).resource_version(backend)
    client.ack(again)


async def test_reconnect_with_initial_versions_sends_only_the_difference(
    cache: SnapshotCache, ads: AdsServer, target: str
) -> None:
    v1 = mesh_snapshot({**SERVICES, "reviews": ["10.0.2.1"]}, ROUTES, LISTENERS)
    cache.set(NODE, v1)
    client = DeltaAdsClient(target, NODE)
    client.open()
    try:
        client.request(CLUSTER)
        client.ack(await client.recv())
        client.request(ENDPOINT, [*EDS_NAMES, cluster_name("reviews")])
        client.ack(await client.recv())
        await client.close(channel=False)

        # While disconnected: backend's endpoints change, reviews goes away.
        v2 = mesh_snapshot({**SERVICES, "backend": ["10.0.1.9"]}, ROUTES, LISTENERS)
        cache.set(NODE, v2)
        client.open()
        client.resume(CLUSTER)
        cds = await client.recv()
        assert not cds.resources  # the client had both clusters at these versions
        assert list(cds.removed_resources) == [cluster_name("reviews")]
        client.ack(cds)
        client.resume(ENDPOINT, [*EDS_NAMES, cluster_name("reviews")])
        eds = await client.recv()
        assert added(eds) == [cluster_name("backend")]
        assert list(eds.removed_resources) == [cluster_name("reviews")]
        client.ack(eds)
        assert sorted(client.view(ENDPOINT).versions) == EDS_NAMES
        await client.expect_silence()
    finally:
        await client.close()


async def test_nack_is_recorded_and_not_resent(
    cache: SnapshotCache, ads: AdsServer, connect_delta: Callable[..., DeltaAdsClient]
) -> None:
    cache.set(NODE, reference_snapshot())
    client = connect_delta(NODE)
    await delta_sync(client)
    v2 = reference_snapshot(connect_timeout=5.0)
    cache.set(NODE, v2)
    cds = await client.recv()
    client.nack(cds, "bad cluster")
    eds = await client.recv()  # endpoints of the changed clusters follow the CDS response
    assert eds.type_url == ENDPOINT
    client.ack(eds)
    await eventually(lambda: types_of(ads, NODE)["clusters"]["state"] == "NACKED")
    assert types_of(ads, NODE)["clusters"]["error"] == "bad cluster"
    await client.expect_silence()
