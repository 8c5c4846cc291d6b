"""VHDS through a real delta Envoy: a sidecar's outbound route table reaches
it as a small route config plus one VirtualHost per service port, and a
weight edit sends the one virtual host that changed, with no route config.

State-of-the-world Envoys keep the inline table (VHDS is delta-only in
Envoy); the other delta tests (test_delta.py, test_eds_push.py) run on VHDS
unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_delta import DeltaMesh
from tests.e2e.test_live_config import RATINGS, metrics, routes_to, split, start, versions
from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import ProcessGroup, wait_for
from tests.support.traffic import Client

pytestmark = pytest.mark.e2e

BACKEND_VHOST = "15001/weather-backend.default.svc.cluster.local:5000"


@pytest.fixture
def mesh(processes: ProcessGroup, tmp_path: Path) -> Mesh:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    return DeltaMesh(processes, config_dir)


def _outbound_route(mesh: Mesh, spec: WorkloadSpec) -> dict[str, object]:
    dump = json.loads(mesh.admin(spec, "/config_dump?resource=dynamic_route_configs"))
    for entry in dump["configs"]:
        config = entry["route_config"]
        if config["name"] == "15001":
            return config  # type: ignore[no-any-return]
    raise AssertionError(f"no route config 15001 in {dump}")


def _vhds_stat(mesh: Mesh, spec: WorkloadSpec, counter: str) -> int:
    hcm = f"outbound_{spec.outbound.replace(':', '_')}"
    return mesh.stat(spec, f"http.{hcm}.rds.vhds.15001.{counter}")


def test_weight_edit_sends_one_virtual_host(mesh: Mesh) -> None:
    frontend, client = start(mesh, split(100, 0))
    with client:
        assert versions(client, 10) == {"v1"}

        # Envoy has the route config with vhds and the virtual hosts it was
        # pushed (each named "{route config}/{virtual host}"), the catch-all too.
        config = _outbound_route(mesh, frontend)
        assert config["vhds"]["config_source"]["ads"] == {}  # type: ignore[index]
        names = {v["name"] for v in config["virtual_hosts"]}  # type: ignore[attr-defined]
        assert BACKEND_VHOST in names
        assert "15001/allow_any" in names or "15001/block_all" in names, names
        assert all(n.startswith("15001/") for n in names), names
        stream = mesh.syncz()[0]
        assert stream["types"]["vhosts"]["state"] == "SYNCED", stream
        vhds_before = _vhds_stat(mesh, frontend, "update_success")
        assert vhds_before >= 1

        before = metrics(mesh)
        mesh.write("vs.yaml", split(0, 100))
        routes_to(client, {"v2"})
        wait_for(lambda: mesh.syncz()[0]["types"]["vhosts"]["state"] == "SYNCED")
        after = metrics(mesh)

        # One VHDS response with one virtual host; no route config was sent.
        pushes = "pilot_xds_pushes_total{type=vhds}"
        assert after[pushes] == before[pushes] + 1
        rds = "pilot_xds_pushes_total{type=rds}"
        assert after.get(rds, 0) == before.get(rds, 0)
        size = "pilot_xds_config_size_bytes_sum{type=vhds}"
        sent = after[size] - before[size]
        assert 0 < sent < 2_000, sent
        assert _vhds_stat(mesh, frontend, "update_success") == vhds_before + 1
        config = _outbound_route(mesh, frontend)
        (backend,) = [v for v in config["virtual_hosts"] if v["name"] == BACKEND_VHOST]  # type: ignore[attr-defined]
        routed = json.dumps(backend["routes"])
        assert "outbound|5000|v2|weather-backend" in routed, routed
        assert "outbound|5000|v1|weather-backend" not in routed, routed
        assert not any(t.get("error") for s in mesh.syncz() for t in s["types"].values())


def _vhost_names(mesh: Mesh, spec: WorkloadSpec) -> set[str]:
    return {v["name"] for v in _outbound_route(mesh, spec)["virtual_hosts"]}  # type: ignore[attr-defined]


def _status(client: Client, url: str) -> int:
    return client.get(url).status


def test_added_and_removed_services_come_and_go_as_virtual_hosts(mesh: Mesh) -> None:
    frontend, client = start(mesh, split(100, 0))
    ratings_vhost = "15001/ratings.default.svc.cluster.local:5000"
    with client:
        assert ratings_vhost not in _vhost_names(mesh, frontend)
        ratings = mesh.workload("ratings-1", {"app": "ratings", "version": "v1"})
        mesh.start_app(
            ratings, "backend", "", "http://unused:5000", "--service", "ratings", sidecar=False
        )
        services = [service("weather-frontend"), service("weather-backend")]
        mesh.write_registry([*services, service("ratings")])
        wait_for(lambda: _status(client, RATINGS) == 200, what="ratings routed")
        assert ratings_vhost in _vhost_names(mesh, frontend)

        # Gone: its virtual host is removed (then its cluster, once that is ACKed).
        mesh.write_registry(services)
        wait_for(lambda: ratings_vhost not in _vhost_names(mesh, frontend), what="vhost gone")
        cluster = "outbound|5000||ratings.default.svc.cluster.local"
        wait_for(lambda: cluster not in mesh.admin(frontend, "/clusters"), what="cluster gone")
        mesh.wait_synced(frontend.id)
        assert mesh.syncz()[0]["types"]["vhosts"]["state"] == "SYNCED"
        assert versions(client, 5) == {"v1"}
        assert not any(t.get("error") for s in mesh.syncz() for t in s["types"].values())


def test_envoy_reconnecting_is_sent_only_the_stale_virtual_host(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    frontend, client = start(mesh, split(100, 0))
    with client:
        assert versions(client, 5) == {"v1"}
        size = "pilot_xds_config_size_bytes_sum{type=vhds}"
        full = metrics(mesh)[size]  # every virtual host, sent once
        assert mesh.plane is not None
        mesh.plane.stop()
        mesh.write("vs.yaml", split(0, 100))  # while the control plane is away
        ports = [mesh.xds_port, mesh.monitor_port, mesh.secure_xds_port]
        monkeypatch.setattr("tests.support.mesh.free_ports", lambda count: ports)
        mesh.start_control_plane()
        # Envoy reconnects with what it holds (initial_resource_versions):
        # the one stale virtual host is sent, not the table.
        routes_to(client, {"v2"}, timeout=30)
        mesh.wait_synced(frontend.id, timeout=30)
        wait_for(lambda: mesh.syncz()[0]["types"]["vhosts"]["state"] == "SYNCED")
        sent = metrics(mesh)[size]
        assert 0 < sent < full, (sent, full)
        assert metrics(mesh)["pilot_xds_pushes_total{type=vhds}"] == 1
        assert BACKEND_VHOST in _vhost_names(mesh, frontend)
