"""The talk's mTLS rollout, with real Envoys and real TLS handshakes:

1. PERMISSIVE everywhere; 2. a (legacy ``Policy``) PERMISSIVE policy for the
backend; 3. a DestinationRule with ISTIO_MUTUAL: sidecar clients encrypt,
clients without a sidecar stay plaintext; 4. STRICT: plaintext is refused.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from tests.support.mesh import Mesh, service
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

POLICY = """\
apiVersion: auth.istio.io/v1alpha1
kind: Policy
metadata:
  name: mtls-backend
  namespace: secure
spec:
  targets:
  - name: weather-backend
  peers:
  - mtls:
      mode: {mode}
"""

MUTUAL = """\
apiVersion: net.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: mtls-mutual
spec:
  host: weather-backend.secure
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
"""


def _get(
    host: str, port: int, target: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_permissive_to_strict_rollout(mesh: Mesh) -> None:
    frontend = mesh.workload(
        "weather-frontend", {"app": "weather-frontend"}, service_account="weather-frontend"
    )
    backend = mesh.workload(
        "weather-backend-single",
        {"app": "weather-backend", "version": "single"},
        namespace="secure",
        service_account="weather-backend",
    )
    mesh.write_registry(
        [service("weather-frontend"), service("weather-backend", namespace="secure")]
    )
    mesh.start_control_plane()
    mesh.start_app(backend)
    mesh.start_envoy(backend)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id, backend.id)
    mesh.wait_listening(frontend)
    mesh.wait_listening(backend)

    out_host, out_port = frontend.outbound.split(":")
    url = "http://weather-backend.secure:5000/headers"
    sidecar_results: list[int] = []
    stop = threading.Event()

    errors: list[BaseException] = []

    def sidecar_load() -> None:
        conn = http.client.HTTPConnection(out_host, int(out_port), timeout=5)
        try:
            while not stop.is_set():
                conn.request("GET", "http://weather-backend.secure:5000/api/weather")
                response = conn.getresponse()
                response.read()
                sidecar_results.append(response.status)
        except Exception as exc:  # recorded and asserted on below
            errors.append(exc)
        finally:
            conn.close()

    def via_sidecar() -> dict[str, str]:
        status, body = _get(out_host, int(out_port), url)
        assert status == 200, body
        return json.loads(body)["headers"]  # type: ignore[no-any-return]

    def plaintext_direct() -> int:
        return _get(backend.address, 5000, "/api/weather")[0]

    worker = threading.Thread(target=sidecar_load)
    worker.start()
    try:
        # 1. PERMISSIVE (no policy): both succeed; no sidecar-to-sidecar TLS yet.
        assert "x-forwarded-client-cert" not in via_sidecar()
        assert plaintext_direct() == 200

        # 2. The talk's Policy (legacy kind, slide's API group) in PERMISSIVE.
        mesh.write("policy.yaml", POLICY.format(mode="PERMISSIVE"))
        wait_for(lambda: "mtls-backend" in json.dumps(mesh.configz()), what="policy applied")
        assert plaintext_direct() == 200
        assert "x-forwarded-client-cert" not in via_sidecar()

        # 3. ISTIO_MUTUAL: the sidecar client now presents the frontend's identity.
        mesh.write("mutual.yaml", MUTUAL)
        xfcc = wait_for(
            lambda: via_sidecar().get("x-forwarded-client-cert"),
            what="mTLS from the frontend's sidecar",
        )
        assert "URI=spiffe://cluster.local/ns/default/sa/weather-frontend" in xfcc
        assert plaintext_direct() == 200  # the legacy client still gets through

        # 4. STRICT: plaintext is refused, the sidecar client still succeeds.
        mesh.write("policy.yaml", POLICY.format(mode="STRICT"))

        def plaintext_refused() -> bool:
            try:
                plaintext_direct()
            except (ConnectionError, http.client.HTTPException, OSError):
                return True
            return False

        wait_for(plaintext_refused, what="plaintext refused under STRICT")
        assert (
            "spiffe://cluster.local/ns/default/sa/weather-frontend"
            in via_sidecar()["x-forwarded-client-cert"]
        )
        count = len(sidecar_results)
        wait_for(lambda: len(sidecar_results) > count + 20, what="sidecar traffic under STRICT")
    finally:
        stop.set()
        worker.join(10)
    assert not errors, errors
    assert sidecar_results and set(sidecar_results) == {200}, set(sidecar_results)

    # The legacy kind was accepted with a deprecation warning naming the replacement.
    messages = [d["message"] for d in mesh.configz()["diagnostics"]]
    assert any("use security.istio.io/v1 PeerAuthentication" in m for m in messages)
    assert any("'authentication.istio.io/v1alpha1'" in m for m in messages)
