"""Locality load balancing through real Envoy: a client sidecar in
region1/zone1, backends in region1/zone1 and region2/zone1 (plain apps on
their workload addresses, no sidecars).

Failover (Istio's localityLbSetting.failover with outlierDetection): every
request stays local until the local backend dies and is ejected, then all
go to region2. Distribute 80/20: the local share is within 5 standard
deviations of the binomial spread of 400 requests.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.mesh import OUTBOUND_STATS, Mesh, WorkloadSpec, service
from tests.support.procs import wait_for
from tests.support.traffic import send

pytestmark = pytest.mark.e2e

HELLO = "http://hello:5000/api/weather"
CLUSTER = "cluster.outbound|5000||hello.default.svc.cluster.local"


def located(spec: WorkloadSpec, locality: str) -> dict[str, Any]:
    entry = spec.entry()
    entry["spec"]["locality"] = locality
    return entry


def rule(load_balancer: dict[str, Any], outlier: bool) -> dict[str, Any]:
    policy: dict[str, Any] = {"loadBalancer": load_balancer}
    if outlier:
        # Envoy ejects at most 10% of the hosts unless told otherwise (and
        # Istio passes maxEjectionPercent through): with two hosts, never.
        policy["outlierDetection"] = {
            "consecutive5xxErrors": 1,
            "interval": "1s",
            "baseEjectionTime": "1m",
            "maxEjectionPercent": 100,
        }
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "hello"},
        "spec": {"host": "hello", "trafficPolicy": policy},
    }


def start(mesh: Mesh, policy: dict[str, Any]) -> tuple[WorkloadSpec, Any]:
    """The client's sidecar and the two backends; returns (client, local app)."""
    client = mesh.workload("client", {"app": "client"}, annotations=OUTBOUND_STATS)
    local = mesh.workload("hello-local", {"app": "hello", "version": "local"})
    remote = mesh.workload("hello-remote", {"app": "hello", "version": "remote"})
    mesh.write(
        "registry.yaml",
        [
            service("client"),
            service("hello"),
            located(client, "region1/zone1"),
            located(local, "region1/zone1"),
            located(remote, "region2/zone1"),
        ],
    )
    mesh.write("rules.yaml", [policy])
    mesh.start_control_plane()
    local_app = mesh.start_app(local, sidecar=False)
    mesh.start_app(remote, sidecar=False)
    mesh.start_envoy(client)
    mesh.wait_synced(client.id)
    mesh.wait_listening(client)
    return client, local_app


def test_failover_stays_local_then_leaves_for_region2_when_local_is_ejected(mesh: Mesh) -> None:
    failover = {"localityLbSetting": {"failover": [{"from": "region1", "to": "region2"}]}}
    client, local_app = start(mesh, rule(failover, outlier=True))
    # Envoy got the client's own locality in its bootstrap, and priorities for it.
    assert '"region": "region1"' in mesh.admin(client, "/server_info")
    replies = send(client.outbound, HELLO, 50)
    assert {(r.status, r.version) for r in replies} == {(200, "local")}

    local_app.stop()

    def all_remote() -> bool:
        replies = send(client.outbound, HELLO, 10)
        return {(r.status, r.version) for r in replies} == {(200, "remote")}

    wait_for(all_remote, timeout=15, what="traffic failed over to region2")
    assert mesh.stat(client, f"{CLUSTER}.outlier_detection.ejections_enforced_total") >= 1
    replies = send(client.outbound, HELLO, 50)
    assert {(r.status, r.version) for r in replies} == {(200, "remote")}


def test_distribute_sends_80_percent_local_20_percent_to_region2(mesh: Mesh) -> None:
    distribute = {
        "localityLbSetting": {
            "distribute": [
                {"from": "region1/zone1/*", "to": {"region1/zone1/*": 80, "region2/zone1/*": 20}}
            ]
        }
    }
    client, _ = start(mesh, rule(distribute, outlier=False))
    replies = send(client.outbound, HELLO, 400, concurrency=4)
    assert {r.status for r in replies} == {200}
    local = sum(r.version == "local" for r in replies)
    # Binomial(400, 0.8): mean 320, standard deviation 8; 5 of them either side.
    assert 280 <= local <= 360, local
    assert local + sum(r.version == "remote" for r in replies) == 400


def test_without_outlier_detection_there_is_no_locality_preference(mesh: Mesh) -> None:
    """Istio applies failover only with outlier detection (Envoy would never
    leave priority 0 otherwise): both backends share one priority."""
    failover = {"localityLbSetting": {"failover": [{"from": "region1", "to": "region2"}]}}
    client, _ = start(mesh, rule(failover, outlier=False))
    replies = send(client.outbound, HELLO, 40)
    assert {r.status for r in replies} == {200}
    assert {r.version for r in replies} == {"local", "remote"}  # round robin over both
