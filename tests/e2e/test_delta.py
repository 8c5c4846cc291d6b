"""The end-to-end traffic tests again, with every Envoy on incremental xDS
(``sailplane bootstrap --delta`` -> ``DELTA_GRPC``): the same mesh, the same
assertions, only the protocol differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import test_core, test_mtls
from tests.support.mesh import Mesh, WorkloadSpec
from tests.support.procs import ProcessGroup

pytestmark = pytest.mark.e2e


class DeltaMesh(Mesh):
    """A :class:`Mesh` whose Envoys all speak delta xDS."""

    def bootstrap(self, spec: WorkloadSpec, *extra: str) -> Path:
        return super().bootstrap(spec, "--delta", *extra)

    def wait_synced(self, *proxies: str, timeout: float = 20.0) -> list[dict[str, object]]:
        streams = super().wait_synced(*proxies, timeout=timeout)
        by_proxy = {s["proxy"]: s for s in streams}
        assert all(by_proxy[p]["protocol"] == "delta" for p in proxies), by_proxy
        return streams


@pytest.fixture
def mesh(processes: ProcessGroup, tmp_path: Path) -> Mesh:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    return DeltaMesh(processes, config_dir)


def test_bootstrap_asks_for_delta(mesh: Mesh) -> None:
    spec = mesh.workload("weather-frontend", {"app": "weather-frontend"})
    mesh.write_registry([])
    mesh.secure_xds_port = 15012
    text = mesh.bootstrap(spec).read_text()
    assert "api_type: DELTA_GRPC" in text


def test_frontend_reaches_backend_through_both_sidecars(mesh: Mesh) -> None:
    test_core.test_frontend_reaches_backend_through_both_sidecars(mesh)


def test_proxy_style_and_origin_form_requests_route_by_host(mesh: Mesh) -> None:
    test_core.test_proxy_style_and_origin_form_requests_route_by_host(mesh)


def test_new_endpoint_reaches_running_envoy_without_failed_requests(mesh: Mesh) -> None:
    test_core.test_new_endpoint_reaches_running_envoy_without_failed_requests(mesh)


def test_permissive_to_strict_rollout(mesh: Mesh) -> None:
    test_mtls.test_permissive_to_strict_rollout(mesh)
