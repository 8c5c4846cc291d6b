"""`serve --config-store` through a real Envoy: the configuration comes
from etcd, and a `sailplane apply` of new weights reaches the sidecar.

(The store's own behaviour: tests/unit/test_store_etcd.py; apply, get,
delete: tests/unit/test_cli_store.py.)"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.test_live_config import RULE, routes_to, split
from tests.support.etcd import Etcd
from tests.support.mesh import Mesh, service
from tests.support.procs import PYTHON
from tests.support.traffic import Client

pytestmark = pytest.mark.e2e


def apply(mesh: Mesh, url: str) -> str:
    done = subprocess.run(
        [PYTHON, "-m", "sailplane", "apply", "-f", str(mesh.config_dir), "--config-store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_apply_through_the_cli_reaches_envoy(mesh: Mesh, etcd: Etcd) -> None:
    url = etcd.url("/e2e")
    frontend = mesh.workload("weather-frontend", {"app": "weather-frontend"})
    backends = [
        mesh.workload(f"weather-backend-{v}", {"app": "weather-backend", "version": v})
        for v in ("v1", "v2")
    ]
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write("rule.yaml", RULE)
    mesh.write("vs.yaml", split(100, 0))
    apply(mesh, url)
    mesh.start_control_plane("--config-store", url)
    assert mesh.configz()["config_store"]["up"] is True
    for spec in backends:
        extra = ("--service", spec.labels["app"])
        mesh.start_app(spec, "backend", "", "http://unused:5000", *extra, sidecar=False)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id)
    mesh.wait_listening(frontend)
    with Client(frontend.outbound) as client:
        routes_to(client, {"v1"})
        mesh.write("vs.yaml", split(0, 100))
        assert "virtualservice default/weather-backend configured" in apply(mesh, url)
        routes_to(client, {"v2"})
