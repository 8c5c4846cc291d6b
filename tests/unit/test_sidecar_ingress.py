"""Sidecar ``ingress``: parsing and validation as Istio's ValidateSidecar,
and the inbound listeners and clusters it gives a proxy."""

from __future__ import annotations

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sailplane.config.loader import load_texts
from sailplane.model.registry import Protocol
from sailplane.model.sidecar import IngressTLS, SidecarIngress
from sailplane.model.source import Severity
from sailplane.translate import build_proxy_resources, proxy_from_node

REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec: {selector: {app: httpbin}, ports: [{name: http, port: 8000, targetPort: 80}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin}
spec: {address: 10.0.0.6, labels: {app: httpbin}}
"""


def sidecar(ingress: str) -> str:
    body = "\n".join("  " + line for line in ingress.strip().splitlines())
    return (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n"
        f"spec:\n  workloadSelector: {{labels: {{app: httpbin}}}}\n  ingress:\n{body}\n"
    )


def parsed(ingress: str) -> tuple[SidecarIngress, ...]:
    result = load_texts([("r.yaml", REGISTRY), ("s.yaml", sidecar(ingress))])
    assert result.mesh is not None
    assert not result.diagnostics, [d.format() for d in result.diagnostics]
    (found,) = result.mesh.sidecars
    return found.ingress


@pytest.mark.parametrize(
    ("ingress", "expected"),
    [
        (
            "- {port: {number: 9081, protocol: HTTP, name: internal},\n"
            "   defaultEndpoint: '0.0.0.0:80'}",
            SidecarIngress(9081, Protocol.HTTP, "internal", endpoint_port=80),
        ),
        (
            "- {port: {number: 9081, name: http-x}, defaultEndpoint: '127.0.0.1:8080'}",
            SidecarIngress(9081, Protocol.HTTP, "http-x", endpoint_port=8080),
        ),
        (
            "- {port: {number: 7000, protocol: TCP}, defaultEndpoint: 'unix:///var/run/a.sock'}",
            SidecarIngress(7000, Protocol.TCP, unix_path="/var/run/a.sock"),
        ),
        (
            "- {port: {number: 9443, protocol: HTTPS},\n"
            "   tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}",
            SidecarIngress(9443, Protocol.HTTPS, tls=IngressTLS("SIMPLE", "/c", "/k")),
        ),
    ],
    ids=["any-address", "localhost", "unix", "tls-no-endpoint"],
)
def test_ingress_entries(ingress: str, expected: SidecarIngress) -> None:
    assert parsed(ingress) == (expected,)


@pytest.mark.parametrize(
    ("ingress", "message"),
    [
        (
            "- {port: {number: 1}, defaultEndpoint: '10.0.0.1:80'}",
            "defaultEndpoint must be of form",
        ),
        ("- {port: {number: 1}, defaultEndpoint: '127.0.0.1:x'}", "is not a port"),
        ("- {port: {number: 1}}\n- {port: {number: 1}}", "must be unique"),
        ("- {port: {number: 1, targetPort: 2}}", "targetPort has no impact"),
        ("- {port: {number: 1}, tls: {mode: ISTIO_MUTUAL}}", "ISTIO_MUTUAL is not supported"),
        ("- {port: {number: 1}, tls: {mode: SIMPLE, privateKey: /k}}", "needs serverCertificate"),
        (
            "- {port: {number: 1}, tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}}",
            "needs caCertificates",
        ),
        (
            "- {port: {number: 1}, tls: {mode: SIMPLE, credentialName: x}}",
            "credentialName is not currently supported",
        ),
        (
            "- {port: {number: 1}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k,"
            " minProtocolVersion: TLSV1_3}}",
            "minProtocolVersion is not supported yet",
        ),
    ],
    ids=[
        "endpoint-host",
        "endpoint-port",
        "duplicate",
        "target-port",
        "istio-mutual",
        "no-cert",
        "mutual-no-ca",
        "credential-name",
        "narrowing-field",
    ],
)
def test_what_istio_refuses_rejects_the_sidecar(ingress: str, message: str) -> None:
    result = load_texts([("r.yaml", REGISTRY), ("s.yaml", sidecar(ingress))])
    found = [d for d in result.diagnostics if message in d.message]
    assert found, [d.format() for d in result.diagnostics]
    assert found[0].severity is Severity.ERROR
    assert "Sidecar default/s" in found[0].format() and found[0].file == "s.yaml"
    assert result.mesh is not None and result.mesh.sidecars == ()


def test_ingress_ports_replace_the_services_ports() -> None:
    result = load_texts(
        [
            ("r.yaml", REGISTRY),
            ("s.yaml", sidecar("- {port: {number: 9081, protocol: HTTP}, defaultEndpoint: ':80'}")),
        ]
    )
    assert result.mesh is not None
    found = build_proxy_resources(result.mesh, proxy_from_node("httpbin.default", {}, result.mesh))
    assert sorted(x.name for x in found.listeners) == ["10.0.0.6_9081", "127.0.0.1_15001"]
    (cluster,) = found.own_clusters
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (cluster.name, address.socket_address.port_value) == ("inbound|9081||", 80)


STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}
"""


def test_ingress_tls_under_strict_mtls_keeps_the_mesh_mtls_chain() -> None:
    """Istio applies ingress[].tls only where the port's mode is DISABLE: under
    STRICT the port keeps its mesh mTLS chain, not the files' TLS chain."""
    result = load_texts(
        [
            ("r.yaml", REGISTRY),
            ("p.yaml", STRICT),
            (
                "s.yaml",
                sidecar(
                    "- {port: {number: 9443, protocol: HTTPS}, defaultEndpoint: ':80',\n"
                    "   tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}"
                ),
            ),
        ]
    )
    assert result.mesh is not None
    assert result.mesh.mtls_mode(result.mesh.workloads[0], 9443) == "STRICT"
    found = build_proxy_resources(result.mesh, proxy_from_node("httpbin.default", {}, result.mesh))
    (listener,) = [x for x in found.listeners if x.name == "10.0.0.6_9443"]
    # (and the twin that refuses the proxy's own connections, loopguard.py)
    assert [c.name for c in listener.filter_chains] == ["mtls", "mtls-loop-guard"]
    chain = listener.filter_chains[0]
    tls = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(tls)
    assert not tls.common_tls_context.tls_certificates  # no /c, /k files
    assert tls.require_client_certificate.value
