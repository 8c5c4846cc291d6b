"""What a second stream for a connected node means (issue #14).

A proxy that reconnects claims what it claimed before: its streams share
one snapshot, old and new, and the new one keeps it when the old one goes.
A stream that claims the same node id with other metadata gets a snapshot of
its own: whatever it claims never reaches the first stream's resources, while
it is connected or after it has left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from sailplane.server.plane import ControlPlane, ServeOptions
from sailplane.xds.client import AdsClient
from sailplane.xds.types import CLUSTER

REGISTRY = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec: {selector: {app: backend}, ports: [{name: http, port: 5000}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-1}
spec: {address: 127.0.0.21, labels: {app: backend}}
"""

NODE = "backend-1.default"
REAL = {"sailplane.app_address": "127.0.0.1"}
ROGUE = {"sailplane.app_address": "127.66.0.1"}
INBOUND = "inbound|5000||"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    plane = ControlPlane(
        ServeOptions(
            tmp_path,
            xds_address=("127.0.0.1", 0),
            monitor_address=("127.0.0.1", 0),
            watch=False,
        )
    )
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


async def _inbound_app_address(client: AdsClient) -> str:
    """The address the inbound cluster forwards to, from a CDS response."""
    client.request(CLUSTER)
    response = await client.recv(10)
    for any_ in response.resources:
        cluster = cluster_pb2.Cluster()
        any_.Unpack(cluster)
        if cluster.name == INBOUND:
            endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
            return str(endpoint.address.socket_address.address)
    raise AssertionError(f"no {INBOUND} cluster")


def _app_address_in_cache(plane: ControlPlane, key: str) -> str:
    snapshot = plane.cache.get(key)
    assert snapshot is not None
    cluster = snapshot.get(CLUSTER).messages[INBOUND]
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    return str(endpoint.address.socket_address.address)


async def _eventually(check: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_reconnecting_proxy_shares_its_snapshot(plane: ControlPlane) -> None:
    target = f"127.0.0.1:{plane.xds_port}"
    old = AdsClient(target, NODE, REAL)
    old.open()
    assert await _inbound_app_address(old) == "127.0.0.1"
    new = AdsClient(target, NODE, REAL)
    new.open()
    assert await _inbound_app_address(new) == "127.0.0.1"
    assert sorted(s["proxy"] for s in plane.status.to_json()) == [NODE, NODE]
    await old.close()
    await _eventually(lambda: len(plane.status.to_json()) == 1)
    assert _app_address_in_cache(plane, NODE) == "127.0.0.1"  # the new stream kept it
    await new.close()


async def test_a_stream_with_other_claims_never_changes_the_first(plane: ControlPlane) -> None:
    target = f"127.0.0.1:{plane.xds_port}"
    real = AdsClient(target, NODE, REAL)
    real.open()
    assert await _inbound_app_address(real) == "127.0.0.1"
    real_versions = plane.cache.get(NODE)
    rogue = AdsClient(target, NODE, ROGUE)
    rogue.open()
    assert await _inbound_app_address(rogue) == "127.66.0.1"  # its own snapshot
    keys = sorted(s["proxy"] for s in plane.status.to_json())
    assert keys[0] == NODE and keys[1].startswith(f"{NODE}~"), keys
    assert plane.cache.get(NODE) is real_versions  # nothing moved for the real proxy
    with pytest.raises(TimeoutError):
        await real.recv(0.5)  # and nothing was pushed to it
    await rogue.close()
    await _eventually(lambda: len(plane.status.to_json()) == 1)
    # A reload after the rogue left rebuilds the real proxy from its own claims.
    mesh = plane.controller.mesh
    assert mesh is not None
    plane.controller.apply(mesh)
    assert _app_address_in_cache(plane, NODE) == "127.0.0.1"
    await real.close()
