"""What a snapshot change pushes: nothing when content is the same, and bytes
encoded once for every stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from sailplane.xds import CLUSTER, ENDPOINT, AdsServer, SnapshotCache, TypeResources
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import (
    EDS_NAMES,
    eventually,
    names,
    recv_many,
    reference_snapshot,
    sync,
    synced_at,
    types_of,
)

NODE = "frontend-v1.default"


async def test_identical_content_pushes_nothing(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    v1 = reference_snapshot()
    assert cache.set(NODE, v1)
    client = connect(NODE)
    await sync(client)
    await eventually(lambda: synced_at(ads, NODE, v1))
    before = types_of(ads, NODE)

    rebuilt = reference_snapshot()  # new objects, same content
    assert rebuilt is not v1
    assert cache.set(NODE, rebuilt) is False
    await client.expect_silence(0.5)
    assert types_of(ads, NODE) == before

    changed = reference_snapshot(connect_timeout=5.0)
    assert cache.set(NODE, changed) is True
    cds, eds = await recv_many(client, 2)
    assert (cds.type_url, cds.version_info) == (CLUSTER, changed.version(CLUSTER))
    assert eds.type_url == ENDPOINT


async def test_resources_are_encoded_once_for_all_streams(
    cache: SnapshotCache,
    ads: AdsServer,
    connect: Callable[..., AdsClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serialised: list[str] = []
    for cls in (cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment):
        original = cls.SerializeToString

        def counting(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> bytes:
            serialised.append(type(self).__name__)
            encoded: bytes = _original(self, *args, **kwargs)
            return encoded

        monkeypatch.setattr(cls, "SerializeToString", counting)
    bodies: list[bytes] = []  # the shared resources part of each CDS response
    body_parts = TypeResources.body_parts

    def recording_parts(self: TypeResources, names: Any) -> list[bytes]:
        if self.type_url == CLUSTER and names is None:
            bodies.append(self.joined)
        return body_parts(self, names)

    monkeypatch.setattr(TypeResources, "body_parts", recording_parts)

    snapshot = reference_snapshot()
    built = sorted(serialised)
    assert built == ["Cluster"] * 2 + ["ClusterLoadAssignment"] * 2  # once each, at build
    nodes = ["frontend-v1.default", "frontend-v2.default"]
    for node in nodes:
        cache.set(node, snapshot)  # the same snapshot object shared by both proxies

    received: dict[str, dict[str, list[bytes]]] = {}
    for node in nodes:
        client = connect(node)
        got = await sync(client)
        received[node] = {t: [r.value for r in got[t].resources] for t in (CLUSTER, ENDPOINT)}
        assert names(got[CLUSTER]) == EDS_NAMES

    # Byte-identical resources on both streams, exactly the pre-encoded chunks ...
    assert received[nodes[0]] == received[nodes[1]]
    # (a chunk is the `resources` field tag, a length, then the Any whose last
    # field is the resource's own encoding)
    chunks = list(snapshot.get(CLUSTER).chunks.values())
    values = received[nodes[0]][CLUSTER]
    assert len(chunks) == len(values) == 2
    assert all(chunk.endswith(value) for chunk, value in zip(chunks, values, strict=True))
    # ... from one shared response body, and no message serialised again.
    assert len(bodies) == 2 and bodies[0] is bodies[1]
    assert sorted(serialised) == built
