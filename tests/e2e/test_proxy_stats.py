"""Which Envoy stats a sidecar keeps (sailplane.translate.stats), read from
real Envoys' admin after real requests.

By default a sidecar creates no stats for its outbound clusters (they grow
with the mesh; Istio leaves them out too) and keeps the rest: the inbound
cluster, listener and HTTP counters move with the traffic. Istio's
``sidecar.istio.io/statsInclusionPrefixes`` annotation brings back those it
names, counting the same requests, and no others.
"""

from __future__ import annotations

import pytest

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import http_get

pytestmark = pytest.mark.e2e

OUTBOUND = "cluster.outbound|5000||weather-backend.default.svc.cluster.local"
CALLS = 7


def stat_names(mesh: Mesh, spec: WorkloadSpec, prefix: str) -> list[str]:
    text = mesh.admin(spec, "/stats")
    return [line.split(":")[0] for line in text.splitlines() if line.startswith(prefix)]


def call_backend(spec: WorkloadSpec) -> None:
    for _ in range(CALLS):
        status, body = http_get(f"http://{spec.app_address}:5000/")
        assert status == 200, body


def test_outbound_cluster_stats_only_when_asked(mesh: Mesh) -> None:
    plain = mesh.workload("weather-frontend", {"app": "weather-frontend"})
    # One cluster's stats: the inclusion-list form (every other stat, and these).
    asked = {"sidecar.istio.io/statsInclusionPrefixes": f"{OUTBOUND}."}
    counted = mesh.workload(
        "weather-frontend-counted", {"app": "weather-frontend"}, annotations=asked
    )
    backend = mesh.workload("weather-backend", {"app": "weather-backend"})
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.start_control_plane()
    for spec in (plain, counted, backend):
        mesh.start_app(spec, role="backend" if spec is backend else "frontend")
        mesh.start_envoy(spec)
    mesh.wait_synced(plain.id, counted.id, backend.id)
    for spec in (plain, counted, backend):
        mesh.wait_listening(spec)

    call_backend(plain)
    call_backend(counted)

    # The default: the outbound cluster exists and carried the requests,
    # but no stat of it was created; the other stats are there.
    assert stat_names(mesh, plain, OUTBOUND) == []
    assert mesh.stat(plain, "cluster_manager.active_clusters") > 3
    assert mesh.stat(plain, "cluster.xds-grpc.upstream_cx_total") >= 1
    assert mesh.stat(backend, "cluster.inbound|5000||.upstream_rq_total") == 2 * CALLS
    assert stat_names(mesh, plain, "listener.") != []
    assert stat_names(mesh, plain, "http.") != []

    # Asked for: the same cluster's counters, counting exactly these calls.
    assert mesh.stat(counted, f"{OUTBOUND}.upstream_rq_total") == CALLS
    assert mesh.stat(counted, f"{OUTBOUND}.upstream_rq_200") == CALLS
    assert mesh.stat(counted, f"{OUTBOUND}.membership_total") == 1
    assert mesh.stat(counted, "cluster.xds-grpc.upstream_cx_total") >= 1
    assert stat_names(mesh, counted, "listener.") != []
    others = "cluster.outbound|5000||weather-frontend.default.svc.cluster.local"
    assert stat_names(mesh, counted, others) == []
