"""The legacy ``MeshPolicy`` (Istio 1.4) through real Envoy and real TLS: the
mesh-wide mode, STRICT when ``peers: [{mtls: {}}]``; a MeshPolicy Istio 1.4
would have refused (not named ``default``) changes nothing."""

from __future__ import annotations

import http.client

import pytest

from tests.e2e.test_mtls import _get
from tests.support.mesh import Mesh, service
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

MESH_POLICY = """\
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata:
  name: {name}
spec:
  peers:
  - mtls: {mtls}
"""
MESH_TLS = {"security.istio.io/tlsMode": "istio"}


def test_a_mesh_policy_makes_the_whole_mesh_strict(mesh: Mesh) -> None:
    frontend = mesh.workload(
        "weather-frontend", {"app": "weather-frontend", **MESH_TLS}, service_account="frontend"
    )
    backend = mesh.workload(
        "weather-backend", {"app": "weather-backend", **MESH_TLS}, service_account="backend"
    )
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    # Istio 1.4 refused this one (a cluster-scoped policy must be named default).
    mesh.write("meshpolicy.yaml", MESH_POLICY.format(name="strict", mtls="{}"))
    mesh.start_control_plane()
    mesh.start_app(backend)
    mesh.start_envoy(backend)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id, backend.id)
    mesh.wait_listening(frontend)
    mesh.wait_listening(backend)

    out_host, out_port = frontend.outbound.split(":")

    def via_sidecar() -> int:
        return _get(out_host, int(out_port), "http://weather-backend:5000/api/weather")[0]

    def plaintext_refused() -> bool:
        try:
            _get(backend.address, 5000, "/api/weather")
        except (ConnectionError, http.client.HTTPException, OSError):
            return True
        return False

    # The misnamed MeshPolicy is an error: the mesh stays PERMISSIVE.
    messages = [d["message"] for d in mesh.configz()["diagnostics"]]
    assert any("a MeshPolicy must be named 'default'" in m for m in messages), messages
    assert not plaintext_refused()
    assert via_sidecar() == 200

    mesh.write("meshpolicy.yaml", MESH_POLICY.format(name="default", mtls="{}"))
    wait_for(plaintext_refused, what="plaintext refused under the MeshPolicy's STRICT")
    assert via_sidecar() == 200  # the sidecar client presents its identity
    messages = [d["message"] for d in mesh.configz()["diagnostics"]]
    assert any("MeshPolicy is deprecated since Istio 1.5" in m for m in messages), messages

    mesh.write("meshpolicy.yaml", MESH_POLICY.format(name="default", mtls="{mode: PERMISSIVE}"))
    wait_for(lambda: not plaintext_refused(), what="plaintext accepted again under PERMISSIVE")
    assert via_sidecar() == 200
