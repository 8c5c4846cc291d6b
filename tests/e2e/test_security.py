"""The CA end to end: the mTLS xDS port, identity checks, rotation, and a
STRICT listener refusing a certificate from another CA."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from sailplane.ca import CertificateAuthority, write_identity
from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import ENVOY, PYTHON, wait_for

pytestmark = pytest.mark.e2e

STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: default
spec:
  mtls:
    mode: STRICT
"""


def _secure_envoy(mesh: Mesh, spec: WorkloadSpec, secure_port: int, name: str = "") -> None:
    """Start an Envoy whose bootstrap uses the mTLS xDS port."""
    out = mesh.config_dir.parent / f"bootstrap-secure-{name or spec.name}.yaml"
    subprocess.run(
        [
            PYTHON,
            "-m",
            "sailplane",
            "bootstrap",
            spec.name,
            "--namespace",
            spec.namespace,
            "--config-dir",
            str(mesh.config_dir),
            "--ca-dir",
            str(mesh.config_dir.parent / "ca"),
            "--secure",
            "--xds-address",
            f"127.0.0.1:{secure_port}",
            "--admin-address",
            spec.admin,
            "--outbound-address",
            spec.outbound,
            "--app-address",
            spec.app_address,
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    mesh.envoys[spec.name] = mesh.group.start(
        f"envoy-{name or spec.name}",
        [
            ENVOY,
            "-c",
            str(out),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warning",
            "--drain-time-s",
            "1",
        ],
    )


def _plane(mesh: Mesh, *extra: str) -> int:
    mesh.start_control_plane(*extra)
    return mesh.secure_xds_port


def test_secure_xds_serves_own_identity_and_refuses_impostors(mesh: Mesh) -> None:
    frontend = mesh.workload(
        "weather-frontend", {"app": "weather-frontend"}, service_account="weather-frontend"
    )
    backend = mesh.workload(
        "weather-backend",
        {"app": "weather-backend", "version": "single"},
        service_account="weather-backend",
    )
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    secure_port = _plane(mesh)
    mesh.start_app(backend)
    _secure_envoy(mesh, backend, secure_port)
    _secure_envoy(mesh, frontend, secure_port)
    mesh.wait_synced(frontend.id, backend.id)
    for spec in (frontend, backend):
        mesh.wait_listening(spec)
    conn = http.client.HTTPConnection(*_host_port(frontend.outbound), timeout=5)
    try:
        conn.request("GET", "http://weather-backend:5000/api/weather")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    dump = json.loads(mesh.http(f"/debug/config_dump?proxy={frontend.id}"))
    assert {s["name"] for s in dump["secrets"]} == {"default", "ROOTCA"}
    assert "[redacted]" in json.dumps(dump["secrets"])  # no key on a debug page

    # An impostor: the frontend's bootstrap certificate, claiming the backend's node.
    impostor_out = mesh.config_dir.parent / "bootstrap-impostor.yaml"
    text = (mesh.config_dir.parent / "bootstrap-secure-weather-frontend.yaml").read_text()
    text = text.replace("id: weather-frontend.default", "id: weather-backend.default")
    impostor_admin = f"127.13.{mesh.network}.200:15000"
    text = text.replace(frontend.admin.split(":")[0], impostor_admin.split(":")[0])
    impostor_out.write_text(
        text.replace(frontend.outbound.split(":")[0], f"127.12.{mesh.network}.200")
    )
    mesh.group.start(
        "envoy-impostor",
        [
            ENVOY,
            "-c",
            str(impostor_out),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warning",
        ],
    )
    plane = mesh.plane
    assert plane is not None
    wait_for(
        lambda: "belongs to spiffe://cluster.local/ns/default/sa/weather-backend" in plane.log(),
        what="the impostor refused",
    )
    # It received nothing: no listener, no secret.
    stats = mesh.admin_at(impostor_admin, "/stats?filter=listener_manager.total_listeners_active")
    assert "total_listeners_active: 0" in stats
    secrets = mesh.admin_at(impostor_admin, "/config_dump?resource=dynamic_active_secrets")
    assert "tls_certificate" not in secrets
    assert [s["proxy"] for s in mesh.syncz()].count(backend.id) == 1


def test_rotation_replaces_certificates_without_failing_requests(mesh: Mesh) -> None:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", "security.istio.io/tlsMode": "istio"},
        service_account="weather-frontend",
    )
    backend = mesh.workload(
        "weather-backend",
        {"app": "weather-backend", "security.istio.io/tlsMode": "istio"},
        service_account="weather-backend",
    )
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write("strict.yaml", STRICT)
    mesh.start_control_plane("--cert-ttl", "6s")
    mesh.start_app(backend)
    mesh.start_envoy(backend)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id, backend.id)
    for spec in (frontend, backend):
        mesh.wait_listening(spec)

    def serial(spec: WorkloadSpec) -> str:
        dump = json.loads(mesh.admin(spec, "/certs"))
        return str(dump["certificates"][0]["cert_chain"][0]["serial_number"])

    wait_for(lambda: mesh.admin(backend, "/certs").count("serial_number") > 0, what="certs")
    first = serial(backend)
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        conn = http.client.HTTPConnection(*_host_port(frontend.outbound), timeout=5)
        try:
            while not stop.is_set():
                conn.request("GET", "http://weather-backend:5000/headers")
                response = conn.getresponse()
                response.read()
                results.append(response.status)
        finally:
            conn.close()

    worker = threading.Thread(target=load)
    worker.start()
    try:
        # With a 6 s lifetime, rotation at 50 % means a new certificate within ~3 s.
        wait_for(lambda: serial(backend) != first, timeout=15, what="rotated certificate")
        second = serial(backend)
        wait_for(lambda: serial(backend) != second, timeout=15, what="rotated again")
    finally:
        stop.set()
        worker.join(10)
    assert results and set(results) == {200}, (len(results), set(results))


def test_strict_listener_refuses_a_certificate_from_another_ca(mesh: Mesh, tmp_path: Path) -> None:
    backend = mesh.workload(
        "weather-backend", {"app": "weather-backend"}, service_account="weather-backend"
    )
    mesh.write_registry([service("weather-backend")])
    mesh.write("strict.yaml", STRICT)
    mesh.start_control_plane()
    mesh.start_app(backend)
    mesh.start_envoy(backend)
    mesh.wait_synced(backend.id)
    mesh.wait_listening(backend)

    # A client certificate from the mesh CA (`sailplane ca issue`) is accepted.
    subprocess.run(
        [
            PYTHON,
            "-m",
            "sailplane",
            "ca",
            "issue",
            "legacy-client",
            "--service-account",
            "legacy",
            "--ca-dir",
            str(mesh.config_dir.parent / "ca"),
            "--out-dir",
            str(tmp_path / "mesh-client"),
        ],
        check=True,
        capture_output=True,
    )
    mesh_client = tmp_path / "mesh-client"

    def request(cert: Path, key: Path, bundle: Path) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # SPIFFE certificates name no host
        context.load_verify_locations(bundle)
        context.load_cert_chain(cert, key)
        with (
            socket.create_connection((backend.address, 5000), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(
                b"GET /api/weather HTTP/1.1\r\nHost: weather-backend\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    bundle = mesh_client / "root-cert.pem"
    assert request(mesh_client / "cert-chain.pem", mesh_client / "key.pem", bundle) == 200

    # The same request with a certificate from another CA fails the handshake.
    other = CertificateAuthority.create_self_signed()
    write_identity(
        other.issue_workload("default", "legacy"), tmp_path / "o.pem", tmp_path / "o.key"
    )
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        request(tmp_path / "o.pem", tmp_path / "o.key", bundle)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
