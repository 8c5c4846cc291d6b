"""VirtualService ``tls`` rules at a sidecar, through a real Envoy: the app
is an HTTPS client behind its HTTP proxy, so it sends ``CONNECT host:port``
and then a ClientHello whose SNI is ``host``; the sidecar tunnels the TLS,
untouched, to the rule's destinations (translate/connect.py). The lie: a
CONNECT to anything no rule names (the backend's own address, another
port, another host) is refused and reaches nobody."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509

from tests.support.mesh import OUTBOUND_STATS, Mesh, WorkloadSpec, service
from tests.support.tlsparts import CertAuthority, accepting, client_context, tls_backend

pytestmark = pytest.mark.e2e


def service_entry(name: str, backend: WorkloadSpec) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name},
        "spec": {
            "hosts": [f"{name}.example.test"],
            "location": "MESH_EXTERNAL",
            "resolution": "STATIC",
            "endpoints": [{"address": backend.address}],
            "ports": [{"number": backend.port, "name": "tls", "protocol": "TLS"}],
        },
    }


def virtual_service(port: int) -> dict[str, Any]:
    def to(name: str, weight: int) -> dict[str, Any]:
        return {
            "destination": {"host": f"{name}.example.test", "port": {"number": port}},
            "weight": weight,
        }

    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "secure"},
        "spec": {
            "hosts": ["secure.example.test", "split.example.test"],
            "tls": [
                {
                    "match": [{"port": port, "sniHosts": ["secure.example.test"]}],
                    "route": [to("secure-a", 100)],
                },
                {
                    "match": [{"port": port, "sniHosts": ["split.example.test"]}],
                    "route": [to("secure-a", 70), to("secure-b", 30)],
                },
            ],
        },
    }


def wildcard_objects(port: int) -> list[dict[str, Any]]:
    """``*.pinned.test`` tunnelled to secure-b; ``*.wild.test``, a wildcard
    ServiceEntry without endpoints, to the CONNECT authority's own host (the
    dynamic forward proxy), as the corpus's direct wildcard egress (36)."""

    def tls_vs(name: str, host: str, destination: str) -> dict[str, Any]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {
                "hosts": [host],
                "tls": [
                    {
                        "match": [{"port": port, "sniHosts": [host]}],
                        "route": [{"destination": {"host": destination, "port": {"number": port}}}],
                    }
                ],
            },
        }

    wild = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "wild"},
        "spec": {
            "hosts": ["*.wild.test"],
            "ports": [{"number": port, "name": "tls", "protocol": "TLS"}],
        },
    }
    return [
        tls_vs("pinned", "*.pinned.test", "secure-b.example.test"),
        wild,
        tls_vs("wild", "*.wild.test", "*.wild.test"),
    ]


@dataclass
class Tunnel:
    status: int
    peer_serial: int = 0
    reply: bytes = b""


def connect(client: WorkloadSpec, authority: str, context: ssl.SSLContext) -> Tunnel:
    """CONNECT through the sidecar, then TLS with the authority's host as
    SNI, send a line and read the backend's reply."""
    host, port = client.outbound.split(":")
    raw = socket.create_connection((host, int(port)), timeout=5)
    with raw:
        raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            if not chunk:
                break
            head += chunk
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            return Tunnel(status)
        with context.wrap_socket(raw, server_hostname=authority.rsplit(":", 1)[0]) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            tls.sendall(b"hello")
            reply = b""
            # Up to the backend's name (both are 8 bytes): not to the end,
            # which Envoy's delayed close (1 s) would hold back.
            while len(reply) < len(b"secure-a") and (chunk := tls.recv(4096)):
                reply += chunk
            serial = x509.load_der_x509_certificate(der).serial_number
            return Tunnel(status, serial, reply)


@contextmanager
def counting_listener(address: str, port: int) -> Iterator[list[int]]:
    """A TCP listener that counts the connections it is offered."""
    accepted: list[int] = []

    def count(conn: socket.socket) -> None:
        accepted.append(1)
        conn.close()

    with accepting(address, port, count):
        yield accepted


def test_sidecar_tunnels_tls_by_sni_split_70_30_and_nothing_else(mesh: Mesh) -> None:
    ca = CertAuthority("external ca")
    names = ("secure.example.test", "split.example.test", "*.pinned.test")
    cert_a, cert_b = ca.issue(*names), ca.issue(*names)
    client = mesh.workload("client", {"app": "client"}, annotations=OUTBOUND_STATS)
    a, b = mesh.external("secure-a"), mesh.external("secure-b")
    stranger = mesh.external("stranger", port=6000)
    mesh.write_registry([service("client")])
    mesh.write(
        "egress.yaml",
        [
            service_entry("secure-a", a),
            service_entry("secure-b", b),
            virtual_service(a.port),
            *wildcard_objects(a.port),
        ],
    )
    with (
        tls_backend(a.address, a.port, cert_a, "secure-a"),
        tls_backend(b.address, b.port, cert_b, "secure-b"),
        counting_listener(stranger.address, stranger.port) as offered,
    ):
        mesh.start_control_plane()
        mesh.start_envoy(client)
        mesh.wait_synced(client.id)
        mesh.wait_listening(client)
        context = client_context(ca.cert_pem)

        # The handshake reaches the backend: its certificate, its bytes.
        first = connect(client, f"secure.example.test:{a.port}", context)
        assert (first.status, first.peer_serial, first.reply) == (200, cert_a.serial, b"secure-a")

        tunnels = [connect(client, f"split.example.test:{a.port}", context) for _ in range(100)]
        assert {t.status for t in tunnels} == {200}
        to_a = sum(t.reply == b"secure-a" for t in tunnels)
        assert {t.reply for t in tunnels} <= {b"secure-a", b"secure-b"}
        assert all(
            t.peer_serial == (cert_a if t.reply == b"secure-a" else cert_b).serial for t in tunnels
        )
        # 70% of 100, sd 4.6: 3.5 sd either side.
        assert 54 <= to_a <= 86, to_a

        # A wildcard SNI: any name under it, on its port.
        pinned = connect(client, f"any.pinned.test:{a.port}", context)
        assert (pinned.status, pinned.reply) == (200, b"secure-b")
        assert connect(client, f"pinned.test:{a.port}", context).status == 404
        # A wildcard ServiceEntry: the dynamic forward proxy looks the
        # authority up (none resolves here: 503 after a DNS query, not 404).
        queries = "dns_cache.passthrough_dns_cache.dns_query_attempt"
        before = mesh.stat(client, queries)
        assert connect(client, f"nowhere.wild.test:{a.port}", context).status == 503
        assert mesh.stat(client, queries) > before

        # The lie: no open proxy. An address and port no rule names, a
        # backend's own address, a named host on another port, a host no
        # rule names: all 404 from the sidecar, no connection made.
        sent = mesh.stat(
            client, f"cluster.outbound|{a.port}||secure-a.example.test.upstream_cx_total"
        )
        for authority in (
            f"{stranger.address}:{stranger.port}",
            f"{a.address}:{a.port}",
            f"secure.example.test:{stranger.port}",
            f"secure-a.example.test:{a.port}",
            f"localhost:{stranger.port}",
            f"nowhere.wild.test:{stranger.port}",
        ):
            assert connect(client, authority, context).status == 404, authority
        assert offered == []
        assert (
            mesh.stat(client, f"cluster.outbound|{a.port}||secure-a.example.test.upstream_cx_total")
            == sent
        )
