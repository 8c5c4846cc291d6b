"""Sidecar ``ingress`` through real Envoy (docs-traffic/35 in the corpus):
explicit inbound ports replace the service's, forward to ``defaultEndpoint``
(the app, on another port), and one terminates MUTUAL TLS with certificate
files where the port's PeerAuthentication says DISABLE. The lies: no client
certificate, one from another CA, and plaintext, are all refused."""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

import pytest

from sailplane.ca import CertificateAuthority, write_identity
from tests.e2e.test_mtls import _get
from tests.support.mesh import Mesh, service
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

SIDECAR = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: ingress-sidecar}}
spec:
  workloadSelector: {{labels: {{app: httpbin}}}}
  ingress:
  - port: {{number: 9443, protocol: HTTPS, name: external}}
    defaultEndpoint: 127.0.0.1:5000
    tls:
      mode: MUTUAL
      serverCertificate: {cert}
      privateKey: {key}
      caCertificates: {ca}
  - port: {{number: 9081, protocol: HTTP, name: internal}}
    defaultEndpoint: 0.0.0.0:5000
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: external-port-plain}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  portLevelMtls:
    9443: {{mode: DISABLE}}
"""


def test_ingress_listeners_forward_to_the_default_endpoint_and_terminate_tls(
    mesh: Mesh, tmp_path: Path
) -> None:
    # The sidecar's server certificate (one CA), the clients' CA, and a stranger's.
    server_ca = CertificateAuthority.create_self_signed()
    write_identity(
        server_ca.issue_workload("default", "httpbin"),
        tmp_path / "tls.crt",
        tmp_path / "tls.key",
        tmp_path / "server-ca.crt",
    )
    client_ca = CertificateAuthority.create_self_signed()
    write_identity(
        client_ca.issue_workload("default", "client"),
        tmp_path / "client.crt",
        tmp_path / "client.key",
        tmp_path / "client-ca.crt",
    )
    stranger = CertificateAuthority.create_self_signed()
    write_identity(
        stranger.issue_workload("default", "client"), tmp_path / "s.crt", tmp_path / "s.key"
    )

    httpbin = mesh.workload("httpbin", {"app": "httpbin"}, service_account="httpbin")
    mesh.write_registry([service("httpbin")])
    mesh.write(
        "sidecar.yaml",
        SIDECAR.format(
            cert=tmp_path / "tls.crt", key=tmp_path / "tls.key", ca=tmp_path / "client-ca.crt"
        ),
    )
    mesh.start_control_plane()
    mesh.start_app(httpbin)
    mesh.start_envoy(httpbin)
    mesh.wait_synced(httpbin.id)
    mesh.wait_listening(httpbin)
    problems = [d["message"] for d in mesh.configz()["diagnostics"]]
    assert not any("ingress" in m for m in problems), problems

    # 9081: plaintext HTTP (PERMISSIVE) to the app on its own port 5000.
    wait_for(lambda: _refuses(httpbin.address, 5000), what="the service's own port 5000 unbound")
    status, _ = _get(httpbin.address, 9081, "/api/weather")
    assert status == 200

    def request(cert: Path | None, key: Path | None) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # a SPIFFE certificate names no host
        context.load_verify_locations(tmp_path / "server-ca.crt")
        if cert and key:
            context.load_cert_chain(cert, key)
        with (
            socket.create_connection((httpbin.address, 9443), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET /api/weather HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    # 9443: TLS with the files' certificate; a client certificate of the given CA.
    assert request(tmp_path / "client.crt", tmp_path / "client.key") == 200
    for cert, key in ((None, None), (tmp_path / "s.crt", tmp_path / "s.key")):
        with pytest.raises((ssl.SSLError, ConnectionResetError, IndexError, ValueError)):
            request(cert, key)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _get(httpbin.address, 9443, "/api/weather")


def _refuses(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False
