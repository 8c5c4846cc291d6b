"""TLS at the gateway through real Envoy: certificates from Kubernetes Secret
files (credentialName, served over SDS, rotated by editing the file),
MUTUAL refusing a client without a certificate, SNI passthrough to TLS
backends, and a ``tls`` route split 70/30 by SNI."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import pytest

from sailplane.xds.client import AdsClient
from sailplane.xds.types import LISTENER, SECRET
from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import wait_for
from tests.support.tlsparts import (
    CertAuthority,
    Issued,
    client_context,
    https_get,
    tls_backend,
    tls_request,
    tls_secret,
)

pytestmark = pytest.mark.e2e

GATEWAY_LABELS = {"istio": "ingressgateway"}


def gateway_service() -> dict[str, Any]:
    """Istio's ingress gateway Service: 443 -> the pod's 8443 (by number)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "default"},
        "spec": {
            "selector": GATEWAY_LABELS,
            "ports": [{"name": "https", "port": 443, "targetPort": 8443}],
        },
    }


def gateway(servers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {"selector": GATEWAY_LABELS, "servers": servers},
    }


def start(mesh: Mesh, gw: WorkloadSpec, backends: tuple[WorkloadSpec, ...] = ()) -> None:
    """Start the plane, the apps and the gateway; return once it listens (a
    gateway with TCP chains only never asks for routes: no SYNCED wait)."""
    mesh.start_control_plane()
    for spec in backends:
        mesh.start_app(spec, sidecar=False)
    mesh.start_envoy(gw, detect_role=True)
    mesh.wait_listening(gw)


def refused(attempt: Any) -> bool:
    """The handshake or the first read fails (TLS 1.3 reports a refused
    client certificate after the handshake)."""
    try:
        reply = attempt()
    except (ssl.SSLError, OSError):
        return True
    return not reply.reply.startswith(b"HTTP/1.1 200")


def key_material(issued: Issued) -> list[str]:
    """Strings that would show the private key: its PEM body lines and the
    base64 the Secret file holds."""
    lines = [line for line in issued.key_pem.decode().splitlines() if "-----" not in line]
    return [*lines, base64.b64encode(issued.key_pem).decode()[:40]]


def test_credential_name_served_rotated_mutual_and_never_shown(mesh: Mesh) -> None:
    ca = CertAuthority("gateway ca")
    first, second = ca.issue("weather.example.com"), ca.issue("weather.example.com")
    secure = ca.issue("secure.example.com")
    client = ca.issue("client.example.com", client=True)
    stranger = CertAuthority("another ca").issue("client.example.com", client=True)
    backend = mesh.workload("weather-backend", {"app": "weather-backend"})
    gw = mesh.workload("ingress-gateway", GATEWAY_LABELS, ports={"https": 8443, "mtls": 9443})
    mesh.write_registry([service("weather-backend"), gateway_service()])
    https = {"mode": "SIMPLE", "credentialName": "weather-credential"}
    mutual = {"mode": "MUTUAL", "credentialName": "secure-credential"}
    absent = {"mode": "SIMPLE", "credentialName": "no-such-secret"}
    mesh.write(
        "gateway.yaml",
        [
            gateway(
                [
                    # 443 named otherwise than the Service's port: mapped by number.
                    {
                        "port": {"number": 443, "name": "https-weather", "protocol": "HTTPS"},
                        "hosts": ["weather.example.com"],
                        "tls": https,
                    },
                    {
                        "port": {"number": 443, "name": "https-absent", "protocol": "HTTPS"},
                        "hosts": ["absent.example.com"],
                        "tls": absent,
                    },
                    {
                        "port": {"number": 9443, "name": "mtls", "protocol": "HTTPS"},
                        "hosts": ["secure.example.com"],
                        "tls": mutual,
                    },
                ]
            ),
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "weather"},
                "spec": {
                    "hosts": ["weather.example.com", "secure.example.com"],
                    "gateways": ["gw"],
                    "http": [{"route": [{"destination": {"host": "weather-backend"}}]}],
                },
            },
        ],
    )
    secret_file = mesh.write("secrets.yaml", [tls_secret("weather-credential", first)])
    mesh.write("mutual.yaml", [tls_secret("secure-credential", secure, ca.cert_pem)])
    start(mesh, gw, (backend,))
    trusting = client_context(ca.cert_pem)

    def weather() -> Any:
        return https_get(gw.address, 8443, "weather.example.com", trusting)

    served = wait_for(lambda: weather() if weather().peer_serial else None, what="HTTPS")
    assert served.peer_serial == first.serial
    assert served.reply.startswith(b"HTTP/1.1 200"), served.reply[:100]

    # The missing Secret: that server only is left out, and reported by name.
    diagnostics = str(mesh.configz())
    assert "no-such-secret" in diagnostics
    assert refused(lambda: https_get(gw.address, 8443, "absent.example.com", trusting))

    # MUTUAL: a client certificate from the Secret's CA is required (the lie:
    # none, or one from another CA, is refused).
    def secure_get(context: ssl.SSLContext) -> Any:
        return https_get(gw.address, 9443, "secure.example.com", context)

    assert secure_get(client_context(ca.cert_pem, client)).reply.startswith(b"HTTP/1.1 200")
    assert refused(lambda: secure_get(trusting))
    assert refused(lambda: secure_get(client_context(ca.cert_pem, stranger)))

    # Rotation: edit the Secret file; the new certificate is served over SDS
    # without touching the listener (no drain, no new listener).
    modified = mesh.stat(gw, "listener_manager.listener_modified")
    mesh.write("secrets.yaml", [tls_secret("weather-credential", second)])
    secret_file.touch()
    wait_for(lambda: weather().peer_serial == second.serial, what="rotated certificate")
    assert weather().reply.startswith(b"HTTP/1.1 200")
    assert mesh.stat(gw, "listener_manager.listener_modified") == modified
    assert mesh.stat(gw, "listener_manager.total_listeners_draining") == 0

    # Key material is never logged nor shown by the monitor.
    shown = "\n".join(
        [
            mesh.plane.log() if mesh.plane else "",
            mesh.http("/debug/configz"),
            mesh.http("/debug/syncz"),
            mesh.http(f"/debug/config_dump?proxy={gw.id}"),
            mesh.http(f"/debug/proxyz?proxy={gw.id}"),
        ]
    )
    assert "[redacted]" in mesh.http(f"/debug/config_dump?proxy={gw.id}")
    for issued in (first, second, secure):
        for fragment in key_material(issued):
            assert fragment not in shown


def tls_route_objects(split: tuple[int, int]) -> list[dict[str, Any]]:
    def to(host: str, weight: int | None = None) -> dict[str, Any]:
        route: dict[str, Any] = {"destination": {"host": host, "port": {"number": 5000}}}
        if weight is not None:
            route["weight"] = weight
        return route

    return [
        gateway(
            [
                {
                    "port": {"number": 443, "name": "tls", "protocol": "TLS"},
                    "hosts": ["*.example.com"],
                    "tls": {"mode": "PASSTHROUGH"},
                }
            ]
        ),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "by-sni"},
            "spec": {
                "hosts": ["*.example.com"],
                "gateways": ["gw"],
                "tls": [
                    {
                        "match": [{"port": 443, "sniHosts": ["a.example.com"]}],
                        "route": [to("tls-a")],
                    },
                    {
                        # snake_case, as some of Istio's own docs write it
                        "match": [{"port": 443, "sni_hosts": ["split.example.com"]}],
                        "route": [to("tls-a", split[0]), to("tls-b", split[1])],
                    },
                ],
            },
        },
    ]


def test_sni_passthrough_and_tls_route_split_70_30(mesh: Mesh) -> None:
    backend_ca = CertAuthority("backend ca")
    names = ("a.example.com", "split.example.com")
    cert_a, cert_b = backend_ca.issue(*names), backend_ca.issue(*names)
    a = mesh.workload("tls-a", {"app": "tls-a"})
    b = mesh.workload("tls-b", {"app": "tls-b"})
    gw = mesh.workload("ingress-gateway", GATEWAY_LABELS, ports={"https": 8443})
    tls_port = {"name": "tls", "port": 5000, "protocol": "TCP", "appProtocol": "tls"}
    backends = []
    for spec in (a, b):
        svc = service(spec.name)
        svc["spec"]["ports"] = [tls_port]
        backends.append(svc)
    mesh.write_registry([*backends, gateway_service()])
    mesh.write("routes.yaml", tls_route_objects((70, 30)))
    with (
        tls_backend(a.address, 5000, cert_a, "tls-a"),
        tls_backend(b.address, 5000, cert_b, "tls-b"),
    ):
        start(mesh, gw)
        context = client_context(backend_ca.cert_pem)

        def connect(sni: str) -> Any:
            return tls_request(gw.address, 8443, sni, context, b"hello")

        # Passthrough: the backend's own certificate and bytes reach the client.
        first = wait_for(lambda: connect("a.example.com"), what="passthrough")
        assert (first.peer_serial, first.reply) == (cert_a.serial, b"tls-a")
        # An SNI no rule names gets no filter chain: the connection is closed.
        assert refused(lambda: connect("other.example.com"))

        replies = [connect("split.example.com") for _ in range(200)]
        to_a = sum(r.reply == b"tls-a" for r in replies)
        assert {r.reply for r in replies} <= {b"tls-a", b"tls-b"}
        assert all(
            r.peer_serial == (cert_a if r.reply == b"tls-a" else cert_b).serial for r in replies
        )
        # 70% of 200 = 140, sd 6.5: 3.5 sd either side.
        assert 117 <= to_a <= 163, to_a


def test_credential_secrets_go_to_no_one_who_lies(mesh: Mesh) -> None:
    """The lies about a gateway's credentialName: a client on the plaintext
    xDS port claiming to be the gateway, asking for ``kubernetes://NAME``,
    gets no answer; the configuration it may see names the Secret but holds
    no key."""
    ca = CertAuthority("gateway ca")
    issued = ca.issue("weather.example.com")
    gw = mesh.workload("ingress-gateway", GATEWAY_LABELS, ports={"https": 8443})
    mesh.write_registry([gateway_service()])
    server = {
        "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["weather.example.com"],
        "tls": {"mode": "SIMPLE", "credentialName": "weather-credential"},
    }
    mesh.write("gateway.yaml", [gateway([server])])
    mesh.write("secrets.yaml", [tls_secret("weather-credential", issued)])
    mesh.start_control_plane()
    key_text = issued.key_pem.decode().splitlines()[1]

    async def as_the_gateway() -> tuple[str, bool]:
        async with AdsClient(f"127.0.0.1:{mesh.xds_port}", gw.id) as client:
            client.request(LISTENER)
            listeners = await client.recv(10)
            client.request(SECRET, ["kubernetes://weather-credential"])
            try:
                await client.recv(3)
            except TimeoutError:
                return listeners.SerializeToString().decode("latin-1"), False
            return listeners.SerializeToString().decode("latin-1"), True

    listeners, answered = asyncio.run(as_the_gateway())
    assert "kubernetes://weather-credential" in listeners  # the reference, as Istio sends it
    assert not answered, "the plaintext port answered a request for a credentialName secret"
    assert key_text not in listeners
    assert key_text not in mesh.plane.log()  # type: ignore[union-attr]
