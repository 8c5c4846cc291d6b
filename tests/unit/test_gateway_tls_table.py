"""Gateway TLS as data: Secrets, ``tls`` routes, server TLS settings and
gateway port mapping, one row each (YAML in, the diagnostic or the Envoy
detail out)."""

from __future__ import annotations

import base64
import textwrap

import pytest
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sailplane.config.loader import LoadResult, load_texts
from sailplane.model.source import Severity
from sailplane.server.credentials import consistency_problems
from sailplane.server.selfcheck import proxy_snapshots
from sailplane.translate import build_proxy_resources, proxy_from_node
from sailplane.translate.tlscredentials import credential_secrets
from sailplane.xds import CLUSTER, SECRET
from tests.support.tlsparts import CertAuthority

CA = CertAuthority("table ca")
SERVER = CA.issue("shop.example.com")
OTHER = CA.issue("other.example.com")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret(data: dict[str, str], name: str = "cred", namespace: str = "default") -> str:
    lines = "".join(f"  {k}: {v}\n" for k, v in data.items())
    return (
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"type: kubernetes.io/tls\ndata:\n{lines}"
    )


GATEWAY_REGISTRY = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: gw}
spec: {address: 10.0.0.9, labels: {istio: ingressgateway}, ports: {https: 8443, http: 8080}}
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  selector: {app: shop}
  ports: [{name: tls, port: 443}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: shop-1}
spec: {address: 10.0.0.1, labels: {app: shop}}
"""


def load(*texts: str) -> LoadResult:
    named = [(f"case{i}.yaml", textwrap.dedent(t)) for i, t in enumerate(texts)]
    return load_texts([*named, ("registry.yaml", GATEWAY_REGISTRY)], keep_going=True)


def problems(result: LoadResult) -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity is not Severity.INFO]


SECRET_CASES = {
    "good": (secret({"tls.crt": b64(SERVER.cert_pem), "tls.key": b64(SERVER.key_pem)}), []),
    "bad-base64": (
        secret({"tls.crt": "not*base64", "tls.key": b64(SERVER.key_pem)}),
        [
            "case0.yaml:6:12: IST0106: Secret default/cred: data.tls.crt: not valid base64 "
            "(use stringData for plain text)"
        ],
    ),
    "key-of-another-certificate": (
        secret({"tls.crt": b64(SERVER.cert_pem), "tls.key": b64(OTHER.key_pem)}),
        [
            "case0.yaml:7:12: IST0106: Secret default/cred: data.tls.key: the private key does not "
            "match the certificate"
        ],
    ),
    "not-a-certificate": (
        secret({"tls.crt": b64(b"hello"), "tls.key": b64(SERVER.key_pem)}),
        [
            "case0.yaml:6:12: IST0106: Secret default/cred: data.tls.crt: not a PEM certificate "
            "(chain)"
        ],
    ),
    "certificate-without-key": (
        secret({"cert": b64(SERVER.cert_pem)}),
        ["case0.yaml:6:3: IST0106: Secret default/cred: data: has cert but no key"],
    ),
    "no-tls-keys": (
        secret({"token": b64(b"x")}),
        [
            "case0.yaml:6:3: warning: Secret default/cred: data: no TLS keys (cert/key, "
            "tls.crt/tls.key, cacert or ca.crt; found: token); not usable as a credentialName"
        ],
    ),
}


@pytest.mark.parametrize(("text", "expected"), SECRET_CASES.values(), ids=SECRET_CASES.keys())
def test_secrets_are_checked_and_never_quoted(text: str, expected: list[str]) -> None:
    result = load(text)
    found = problems(result)
    assert found == expected
    shown = "\n".join(found) + repr(result.mesh)
    for line in SERVER.key_pem.decode().splitlines()[1:-1]:
        assert line not in shown


def gateway(tls: str, protocol: str = "HTTPS", number: int = 443) -> str:
    return f"""
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {{name: gw}}
    spec:
      selector: {{istio: ingressgateway}}
      servers:
      - port: {{number: {number}, name: https-shop, protocol: {protocol}}}
        hosts: [shop.example.com]
        tls: {tls}
    """


GATEWAY_CASES = {
    "credential-and-files": (
        gateway("{mode: SIMPLE, credentialName: c, serverCertificate: /c, privateKey: /k}"),
        "IST0106: Gateway default/gw: spec.servers[0].tls: only one of credentialName and "
        "serverCertificate/privateKey should be specified",
    ),
    "simple-without-certificate": (
        gateway("{mode: SIMPLE}"),
        "IST0106: Gateway default/gw: spec.servers[0].tls: SIMPLE needs credentialName, or "
        "serverCertificate and privateKey",
    ),
    "istio-mutual-with-credential": (
        gateway("{mode: ISTIO_MUTUAL, credentialName: c}"),
        "IST0106: Gateway default/gw: spec.servers[0].tls: ISTIO_MUTUAL uses the gateway's mesh "
        "identity; it cannot have serverCertificate, privateKey, caCertificates or credentialName",
    ),
    "passthrough-with-certificate": (
        gateway("{mode: PASSTHROUGH, credentialName: c}", "TLS"),
        "warning: Gateway default/gw: spec.servers[0].tls: PASSTHROUGH mode does not use "
        "certificates, they will be ignored",
    ),
    "missing-secret": (
        gateway("{mode: SIMPLE, credentialName: nowhere}"),
        "warning: IST0101: Gateway default/gw: spec.servers[0].tls.credentialName: "
        "credentialName 'nowhere' cannot be served to the gateway workloads of namespace "
        "default: no Secret default/nowhere with a certificate and key; this server is not "
        "served",
    ),
    "secret-of-another-namespace": (
        gateway("{mode: SIMPLE, credentialName: kubernetes://other/cred}"),
        "warning: IST0101: Gateway default/gw: spec.servers[0].tls.credentialName: "
        "credentialName 'kubernetes://other/cred' cannot be served to the gateway workloads of "
        "namespace default: Secret other/cred is in another namespace (a proxy reads its own "
        "namespace's); this server is not served",
    ),
}


@pytest.mark.parametrize(("text", "expected"), GATEWAY_CASES.values(), ids=GATEWAY_CASES.keys())
def test_gateway_tls_settings(text: str, expected: str) -> None:
    other = secret(
        {"tls.crt": b64(SERVER.cert_pem), "tls.key": b64(SERVER.key_pem)}, "cred", "other"
    )
    found = problems(load(text, other))
    assert [p.split(": ", 1)[1] for p in found] == [expected]


def listeners_of(result: LoadResult) -> dict[int, object]:
    mesh = result.mesh
    assert mesh is not None
    resources = build_proxy_resources(mesh, proxy_from_node("gw.default", {}, mesh))
    return {x.address.socket_address.port_value: x for x in resources.listeners}


def test_a_cross_namespace_secret_is_never_served() -> None:
    """The lie: a Gateway naming another namespace's Secret gets no chain
    (and so no certificate), whatever that Secret holds."""
    other = secret(
        {"tls.crt": b64(SERVER.cert_pem), "tls.key": b64(SERVER.key_pem)}, "cred", "other"
    )
    result = load(gateway("{mode: SIMPLE, credentialName: kubernetes://other/cred}"), other)
    assert listeners_of(result) == {}


PORT_CASES = {
    # A gateway Service maps by number, whatever the server port's name.
    # (the WorkloadEntry maps the Service port name https to 8443)
    "service-by-number": ("ports: [{name: https, port: 443, targetPort: 9443}]", 443, 8443),
    "service-target-port": ("ports: [{name: web, port: 443, targetPort: 9443}]", 443, 9443),
    # No Service has the port: the server port's name (sailplane's examples) ...
    "no-service-port-name": ("ports: [{name: web, port: 80}]", 7443, 8443),
    # ... then the name Istio's default gateway Service gives 443 ...
    "no-service-default-name": ("ports: [{name: web, port: 80}]", 443, 8443),
    # ... then as is.
    "as-is": ("ports: [{name: web, port: 80}]", 7444, 7444),
}


@pytest.mark.parametrize(("ports", "server", "bound"), PORT_CASES.values(), ids=PORT_CASES.keys())
def test_gateway_ports_map_through_the_gateway_service(ports: str, server: int, bound: int) -> None:
    service = f"""
    apiVersion: v1
    kind: Service
    metadata: {{name: istio-ingressgateway}}
    spec:
      selector: {{istio: ingressgateway}}
      {ports}
    """
    name = "https" if server == 7443 else "tls-shop"
    passthrough = gateway("{mode: PASSTHROUGH}", "TLS", server).replace("https-shop", name)
    route = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: shop}
    spec:
      hosts: [shop.example.com]
      gateways: [gw]
      tls:
      - match: [{sniHosts: [shop.example.com]}]
        route: [{destination: {host: shop}}]
    """
    assert list(listeners_of(load(service, passthrough, route))) == [bound]


def test_tls_route_weights_and_sni_validation() -> None:
    route = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: shop}
    spec:
      hosts: [shop.example.com]
      gateways: [gw]
      tls:
      - match: [{port: 443, sniHosts: [shop.example.com]}]
        route:
        - {destination: {host: shop}, weight: 70}
        - {destination: {host: shop, port: {number: 443}}, weight: 30}
      - match: [{sniHosts: [elsewhere.example.org]}]
        route: [{destination: {host: shop}}]
    """
    result = load(gateway("{mode: PASSTHROUGH}", "TLS"), route)
    assert [p.split(": ", 1)[1] for p in problems(result)] == [
        "IST0106: VirtualService default/shop: spec.tls[1].match[0].sniHosts[0]: the SNI host "
        "'elsewhere.example.org' must be a subset of one of the hosts ['shop.example.com']"
    ]
    fixed = load(
        gateway("{mode: PASSTHROUGH}", "TLS"),
        route.replace("elsewhere.example.org", "shop.example.com"),
    )
    (listener,) = listeners_of(fixed).values()
    (chain,) = listener.filter_chains  # type: ignore[attr-defined]
    assert list(chain.filter_chain_match.server_names) == ["shop.example.com"]
    proxy = tcp_proxy_pb2.TcpProxy()
    chain.filters[0].typed_config.Unpack(proxy)
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [
        ("outbound|443||shop.default.svc.cluster.local", 70),
        ("outbound|443||shop.default.svc.cluster.local", 30),
    ]
    assert not chain.HasField("transport_socket")  # passthrough: TLS is not terminated


def test_mutual_credential_requires_a_client_certificate() -> None:
    data = {
        "tls.crt": b64(SERVER.cert_pem),
        "tls.key": b64(SERVER.key_pem),
        "ca.crt": b64(CA.cert_pem),
    }
    route = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: shop}
    spec:
      hosts: [shop.example.com]
      gateways: [gw]
      http: [{route: [{destination: {host: shop}}]}]
    """
    result = load(gateway("{mode: MUTUAL, credentialName: cred}"), secret(data), route)
    assert problems(result) == []
    (listener,) = listeners_of(result).values()
    context = tls_pb2.DownstreamTlsContext()
    listener.filter_chains[0].transport_socket.typed_config.Unpack(context)  # type: ignore[attr-defined]
    assert context.require_client_certificate.value
    combined = context.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://cred-cacert"


def test_a_broken_secret_keeps_its_last_good_version_in_force() -> None:
    """A bad edit of the Secret file (a key of another certificate) is
    reported; the gateway keeps serving the last good certificate."""
    good = secret({"tls.crt": b64(SERVER.cert_pem), "tls.key": b64(SERVER.key_pem)})
    bad = secret({"tls.crt": b64(SERVER.cert_pem), "tls.key": b64(OTHER.key_pem)})
    first = load_texts([("secret.yaml", good), ("registry.yaml", GATEWAY_REGISTRY)])
    second = load_texts(
        [("secret.yaml", bad), ("registry.yaml", GATEWAY_REGISTRY)], previous=first.in_force()
    )
    assert first.mesh is not None and second.mesh is not None
    assert second.mesh.secrets == first.mesh.secrets
    assert [d.message for d in second.diagnostics if d.severity is Severity.ERROR] == [
        "the private key does not match the certificate"
    ]


def test_another_namespaces_credential_is_never_filled() -> None:
    """The lie, for what a proxy is sent: names of another namespace's
    Secret (certificate and CA) are left unfilled, and a sidecar whose
    DestinationRule names one gets none of that namespace's secrets."""
    data = {
        "tls.crt": b64(SERVER.cert_pem),
        "tls.key": b64(SERVER.key_pem),
        "ca.crt": b64(CA.cert_pem),
    }
    rule = """
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: shop}
    spec:
      host: shop
      trafficPolicy:
        tls: {mode: MUTUAL, credentialName: kubernetes://other/cred}
    """
    result = load(rule, secret(data, "cred", "other"))
    mesh = result.mesh
    assert mesh is not None
    wanted = {"kubernetes://other/cred", "kubernetes://other/cred-cacert"}
    assert credential_secrets(mesh, "default", wanted) == []
    assert len(credential_secrets(mesh, "other", wanted)) == 2  # the Secret itself is good
    [snapshot] = [s for w, s in proxy_snapshots(mesh) if w.id == "shop-1.default"]
    assert "kubernetes://other/cred" in snapshot.get(CLUSTER).references.sds
    served = snapshot.get(SECRET).chunks.keys()
    assert served and not [n for n in served if n.startswith("kubernetes://other/")]
    # Unfilled as in Istio: not sailplane's inconsistency.
    assert snapshot.consistent()
    assert consistency_problems(snapshot) == []
