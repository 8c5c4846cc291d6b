"""The inbound loop guard as data (translate/loopguard.py): every inbound
cluster connects from 127.0.0.6 (but to an IPv6 app or a unix socket), and
every chain of every inbound listener, whatever its PeerAuthentication mode,
protocol or Sidecar ingress TLS, has a twin that takes the connections
from 127.0.0.6 and closes them."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailplane.config.loader import load_texts
from sailplane.translate import build_proxy_resources, proxy_from_node

REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  selector: {app: app}
  ports: [{name: http, port: 8000, targetPort: 80}, {name: tcp-db, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: app}
spec: {address: app.example, labels: {app: app}}
"""


def peer_authentication(spec: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa}\n"
        f"spec: {spec}\n"
    )


SIDECAR_INGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s}
spec:
  workloadSelector: {labels: {app: app}}
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: external}
    defaultEndpoint: 127.0.0.1:80
    tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}
  - port: {number: 7000, protocol: TCP, name: socket}
    defaultEndpoint: unix:///var/run/app.sock
"""

# id, extra YAML, node metadata, {port: chain names}, {inbound cluster: its source address}
ROWS: list[tuple[str, str, dict[str, Any], dict[int, list[str]], dict[str, str]]] = [
    (
        "permissive",
        "",
        {},
        {80: ["mtls", "plaintext"], 5432: ["mtls", "tls", "plaintext"]},
        {"inbound|80||": "127.0.0.6", "inbound|5432||": "127.0.0.6"},
    ),
    (
        "strict",
        peer_authentication("{mtls: {mode: STRICT}}"),
        {},
        {80: ["mtls"], 5432: ["mtls"]},
        {"inbound|80||": "127.0.0.6", "inbound|5432||": "127.0.0.6"},
    ),
    (
        "disable-per-port",
        peer_authentication(
            "{selector: {matchLabels: {app: app}}, mtls: {mode: STRICT},"
            " portLevelMtls: {5432: {mode: DISABLE}}}"
        ),
        {},
        {80: ["mtls"], 5432: ["plaintext"]},
        {"inbound|80||": "127.0.0.6", "inbound|5432||": "127.0.0.6"},
    ),
    (
        "sidecar-ingress",
        SIDECAR_INGRESS + "---\n" + peer_authentication("{mtls: {mode: DISABLE}}"),
        {},
        {9443: ["tls"], 7000: ["plaintext"]},
        {"inbound|9443||": "127.0.0.6", "inbound|7000||": ""},  # no source for a unix socket
    ),
    (
        "ipv6-app",
        "",
        {"sailplane.app_address": "::1"},
        {80: ["mtls", "plaintext"], 5432: ["mtls", "tls", "plaintext"]},
        {"inbound|80||": "", "inbound|5432||": ""},  # ::6 is no address of the host
    ),
]


def resources(extra: str, metadata: dict[str, Any]) -> Any:
    texts = [("registry.yaml", REGISTRY)] + ([("extra.yaml", extra)] if extra else [])
    result = load_texts(texts)
    assert result.mesh is not None
    assert not result.diagnostics, [d.format() for d in result.diagnostics]
    proxy = proxy_from_node("app.default", {"role": "sidecar", **metadata}, result.mesh)
    return build_proxy_resources(result.mesh, proxy)


def guard_of(chain: listener_components_pb2.FilterChain, port: int) -> dict[str, Any]:
    """What the twin of ``chain`` must be: its match plus 127.0.0.6, refusing."""
    return {
        "name": f"{chain.name}-loop-guard",
        "match": (
            chain.filter_chain_match.transport_protocol,
            list(chain.filter_chain_match.application_protocols),
            [("127.0.0.6", 32)],
        ),
        "refuses": ("BlackHoleCluster", f"inbound_{port}.loop_guard"),
        "tls": False,
    }


def described(chain: listener_components_pb2.FilterChain) -> dict[str, Any]:
    (only,) = chain.filters
    tcp = tcp_proxy_pb2.TcpProxy()
    assert only.typed_config.Unpack(tcp)
    match = chain.filter_chain_match
    return {
        "name": chain.name,
        "match": (
            match.transport_protocol,
            list(match.application_protocols),
            [(r.address_prefix, r.prefix_len.value) for r in match.direct_source_prefix_ranges],
        ),
        "refuses": (tcp.cluster, tcp.stat_prefix),
        "tls": chain.HasField("transport_socket"),
    }


@pytest.mark.parametrize(
    ("extra", "metadata", "chains", "sources"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_inbound_clusters_bind_and_every_chain_has_a_guard(
    extra: str, metadata: dict[str, Any], chains: dict[int, list[str]], sources: dict[str, str]
) -> None:
    built = resources(extra, metadata)
    inbound = {c.name: c for c in built.own_clusters if c.name.startswith("inbound|")}
    assert {
        name: c.upstream_bind_config.source_address.address for name, c in inbound.items()
    } == sources
    for cluster in inbound.values():
        if cluster.HasField("upstream_bind_config"):
            assert cluster.upstream_bind_config.source_address.port_value == 0

    listeners = [x for x in built.listeners if x.traffic_direction == base_pb2.INBOUND]
    assert sorted(x.address.socket_address.port_value for x in listeners) == sorted(chains)
    for listener in listeners:
        port = listener.address.socket_address.port_value
        served = [c for c in listener.filter_chains if not c.name.endswith("-loop-guard")]
        guards = [c for c in listener.filter_chains if c.name.endswith("-loop-guard")]
        assert [c.name for c in served] == chains[port]
        # No served chain matches on the direct source, so the twins are more specific.
        assert not any(c.filter_chain_match.direct_source_prefix_ranges for c in served)
        assert [described(g) for g in guards] == [guard_of(c, port) for c in served]
