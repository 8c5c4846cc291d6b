"""ACK, NACK and stale nonces on a state-of-the-world ADS stream."""

from __future__ import annotations

from collections.abc import Callable

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, SnapshotCache
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import (
    EDS_NAMES,
    LISTENERS,
    RDS_NAMES,
    ROUTES,
    SERVICES,
    SHORT,
    cluster_name,
    eventually,
    mesh_snapshot,
    names,
    recv_many,
    reference_snapshot,
    sync,
    synced_at,
    types_of,
)

NODE = "frontend-v1.default"


async def test_ack_synced_for_every_type(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    snapshot = reference_snapshot()
    cache.set(NODE, snapshot)
    client = connect(NODE)

    got = await sync(client)

    assert names(got[CLUSTER]) == EDS_NAMES  # wildcard: every cluster
    assert names(got[ENDPOINT]) == EDS_NAMES
    assert names(got[LISTENER]) == ["0.0.0.0_5000"]  # wildcard: every listener
    assert names(got[ROUTE]) == RDS_NAMES
    for type_url, response in got.items():
        assert response.version_info == snapshot.version(type_url)
    nonces = [r.nonce for r in got.values()]
    assert all(nonces) and len(set(nonces)) == len(nonces)

    await eventually(lambda: synced_at(ads, NODE, snapshot), what="all types SYNCED")
    types = types_of(ads, NODE)
    assert set(types) == set(SHORT)
    for short, type_url in SHORT.items():
        assert types[short] == {
            "state": "SYNCED",
            "sent": snapshot.version(type_url),
            "acked": snapshot.version(type_url),
            "error": None,
        }
    await client.expect_silence()  # ACKs are not answered


async def test_nack_keeps_last_good_version_and_is_not_resent(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect(NODE)
    await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))

    # A cluster change the proxy will reject.
    v2 = reference_snapshot(connect_timeout=0.25)
    assert cache.set(NODE, v2)
    cds, eds = await recv_many(client, 2)
    assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
    assert cds.version_info == v2.version(CLUSTER)
    message = "cluster outbound|5000||backend: connect_timeout rejected"
    client.nack(cds, message)
    client.ack(eds)

    def clusters_nacked() -> bool:
        return bool(types_of(ads, NODE)["clusters"]["state"] == "NACKED")

    await eventually(clusters_nacked, what="clusters NACKED")
    await eventually(lambda: types_of(ads, NODE)["endpoints"]["state"] == "SYNCED")
    types = types_of(ads, NODE)
    assert types["clusters"] == {
        "state": "NACKED",
        "sent": v2.version(CLUSTER),
        "acked": v1.version(CLUSTER),  # still on its last accepted version
        "error": message,
    }
    for short in ("endpoints", "listeners", "routes"):
        assert types[short]["state"] == "SYNCED"
        assert types[short]["error"] is None
    # The rejected version is not sent again.
    await client.expect_silence(0.5)

    # The next change is sent; once ACKed, the proxy is SYNCED and the error gone.
    v3 = reference_snapshot(connect_timeout=2.0)
    assert cache.set(NODE, v3)
    cds, eds = await recv_many(client, 2)
    assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
    assert cds.version_info == v3.version(CLUSTER)
    client.ack(cds)
    client.ack(eds)
    await eventually(lambda: synced_at(ads, NODE, v3), what="SYNCED at v3")
    assert types_of(ads, NODE)["clusters"]["error"] is None
    await client.expect_silence()


async def test_stale_nonce_is_ignored(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = reference_snapshot()
    cache.set(NODE, v1)
    client = connect(NODE)
    got = await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))
    old_eds = got[ENDPOINT]

    # Only endpoints change: one EDS response.
    v2 = mesh_snapshot({**SERVICES, "backend": ["10.0.1.9"]}, ROUTES, LISTENERS)
    assert cache.set(NODE, v2)
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    assert eds.version_info == v2.version(ENDPOINT)
    assert eds.nonce != old_eds.nonce
    before = types_of(ads, NODE)

    # A request still answering the previous response, asking for something new.
    client.request(
        ENDPOINT,
        [*EDS_NAMES, cluster_name("reviews")],
        version=old_eds.version_info,
        nonce=old_eds.nonce,
    )
    await client.expect_silence(0.5)
    assert types_of(ads, NODE) == before
    assert before["endpoints"]["state"] == "STALE"

    # ACK the latest: SYNCED, and the stale request's names were not taken.
    client.ack(eds)
    await eventually(lambda: synced_at(ads, NODE, v2))
    await client.expect_silence()
    v3 = mesh_snapshot(
        {**SERVICES, "backend": ["10.0.1.7"], "reviews": ["10.0.2.1"]},
        {"5000": [*ROUTES["5000"], "reviews"]},
        LISTENERS,
    )
    assert cache.set(NODE, v3)
    cds, eds, rds = await recv_many(client, 3)  # the listener did not change
    assert [cds.type_url, eds.type_url, rds.type_url] == [CLUSTER, ENDPOINT, ROUTE]
    assert cluster_name("reviews") in names(cds)
    # "reviews" exists now, but was never asked for; of what was, only the
    # changed assignment (a response that only adds clusters is not followed
    # by every assignment again: Envoy asks for the new cluster's itself).
    assert names(eds) == [cluster_name("backend")]
