"""An endpoint change reaches a running Envoy as an EDS-only push carrying
only the changed ClusterLoadAssignment, and Envoy keeps every other one.

State of the world allows this for endpoints (xDS protocol, "Grouping
resources into responses": a response for a type other than listeners and
clusters need not repeat the resources that did not change); delta sends
only what changed by definition. Both are checked through a real Envoy: its
per-cluster EDS counters show which assignments it received, its
``/clusters`` page and traffic show it kept the rest.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from tests.e2e.test_delta import DeltaMesh
from tests.support.mesh import OUTBOUND_STATS, Mesh, WorkloadSpec, service
from tests.support.procs import ProcessGroup, wait_for

pytestmark = pytest.mark.e2e

SERVICES = ("weather-frontend", "weather-backend", "weather-cache")


def _cluster(name: str) -> str:
    return f"outbound|5000||{name}.default.svc.cluster.local"


@pytest.fixture(params=["sotw", "delta"])
def any_mesh(request: pytest.FixtureRequest, processes: ProcessGroup, tmp_path: Path) -> Mesh:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    kind = DeltaMesh if request.param == "delta" else Mesh
    return kind(processes, config_dir)


def _get(spec: WorkloadSpec, host: str) -> int:
    """A request through ``spec``'s sidecar (its outbound HTTP proxy) to ``host``."""
    address, port = spec.outbound.split(":")
    conn = http.client.HTTPConnection(address, int(port), timeout=5)
    try:
        conn.request("GET", f"http://{host}:5000/api/weather")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _counters(mesh: Mesh, spec: WorkloadSpec) -> dict[str, int]:
    names = {
        "cds": "cluster_manager.cds.update_success",
        "lds": "listener_manager.lds.update_success",
        "rds": f"http.outbound_{spec.outbound.replace(':', '_')}.rds.15001.update_success",
    }
    names.update({host: f"cluster.{_cluster(host)}.update_success" for host in SERVICES})
    return {key: mesh.stat(spec, name) for key, name in names.items()}


def test_endpoint_push_carries_only_the_change_and_envoy_keeps_the_rest(any_mesh: Mesh) -> None:
    mesh = any_mesh
    frontend = mesh.workload(
        "weather-frontend", {"app": "weather-frontend"}, annotations=OUTBOUND_STATS
    )
    backend = mesh.workload("weather-backend-1", {"app": "weather-backend"})
    cache = mesh.workload("weather-cache-1", {"app": "weather-cache"})
    mesh.write_registry([service(name) for name in SERVICES])
    mesh.start_control_plane()
    for spec in (backend, cache):
        mesh.start_app(spec)
        mesh.start_envoy(spec)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id, backend.id, cache.id)
    for spec in (frontend, backend, cache):
        mesh.wait_listening(spec)
    assert _get(frontend, "weather-cache") == 200
    assert _get(frontend, "weather-backend") == 200
    before = _counters(mesh, frontend)
    assert before["cds"] >= 1 and before["weather-cache"] >= 1

    # A second backend instance is registered: one endpoint more, nothing else.
    added = mesh.workload("weather-backend-2", {"app": "weather-backend"})
    mesh.write_registry([service(name) for name in SERVICES])
    wait_for(
        lambda: (
            f"{_cluster('weather-backend')}::{added.address}:5000::"
            in mesh.admin(frontend, "/clusters")
        ),
        timeout=20,
        what="the new endpoint in the frontend's Envoy",
    )
    mesh.wait_synced(frontend.id, backend.id, cache.id)

    after = _counters(mesh, frontend)
    assert after["weather-backend"] > before["weather-backend"]  # its assignment arrived
    unchanged = {k: v for k, v in after.items() if k != "weather-backend"}
    assert unchanged == {k: v for k, v in before.items() if k != "weather-backend"}, (
        "only the weather-backend assignment may be pushed"
    )
    # Envoy kept what it was not sent: the cache's endpoint, and traffic to it.
    clusters = mesh.admin(frontend, "/clusters")
    assert f"{_cluster('weather-cache')}::{cache.address}:5000::" in clusters
    assert f"{_cluster('weather-backend')}::{backend.address}:5000::" in clusters
    assert _get(frontend, "weather-cache") == 200
