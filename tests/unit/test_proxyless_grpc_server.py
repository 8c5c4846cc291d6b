"""Proxyless gRPC servers (#21, gRFC A36, A41): the inbound listener's name
and shape, and which AuthorizationPolicy rules gRPC gets (failing closed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cryptography import x509
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sailplane.ca import CertificateAuthority, IdentityStore
from sailplane.config.loader import load_dir
from sailplane.model.authz import Action, AuthorizationPolicy, Condition, Operation, Rule, Source_
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Position, Source
from sailplane.server.credentials import control_plane_identity, server_hostnames
from sailplane.translate import proxy_from_node
from sailplane.translate.bootstrap import BootstrapCredentials
from sailplane.translate.build import build_proxy_resources
from sailplane.translate.grpcauthz import grpc_rbac_filters, grpc_readable, grpc_rule
from sailplane.translate.grpcbootstrap import build_grpc_bootstrap
from sailplane.translate.grpcserver import INBOUND_LISTENER_PREFIX, inbound_listener_name

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "config" / "proxyless-grpc-server" / "in"
GRPC = {"GENERATOR": "grpc"}
HERE = Source("mesh.yaml", Position(1, 1))


def golden_mesh() -> MeshConfig:
    mesh = load_dir(GOLDEN).mesh
    assert mesh is not None
    return mesh


def test_listener_name_is_istios_template() -> None:
    assert inbound_listener_name("10.0.0.1", 50051) == (
        "xds.istio.io/grpc/lds/inbound/10.0.0.1:50051"
    )
    assert inbound_listener_name("fd00::1", 80) == "xds.istio.io/grpc/lds/inbound/[fd00::1]:80"
    template = build_grpc_bootstrap(golden_mesh().workloads_by_id["echo-v1.default"], ("x", 1))[
        "server_listener_resource_name_template"
    ]
    assert template == "xds.istio.io/grpc/lds/inbound/%s"  # Istio's, %s = IP:PORT
    assert template.replace("%s", "10.3.0.1:50051") == inbound_listener_name("10.3.0.1", 50051)


def inbound(mesh: MeshConfig, node_id: str) -> dict[str, object]:
    proxy = proxy_from_node(node_id, GRPC, mesh)
    return {
        x.name: x
        for x in build_proxy_resources(mesh, proxy).listeners
        if x.name.startswith(INBOUND_LISTENER_PREFIX)
    }


def test_only_its_own_address_and_service_ports() -> None:
    mesh = golden_mesh()
    # The workload port of each service port (targetPort 9090, not 8080).
    assert set(inbound(mesh, "echo-v1.default")) == {
        inbound_listener_name("10.3.0.1", 9090),
        inbound_listener_name("10.3.0.1", 50051),
    }
    assert inbound(mesh, "echo-dns.default") == {}  # a DNS name: nothing to listen on
    # An Envoy sidecar of the same workload gets none of them.
    envoy = build_proxy_resources(mesh, proxy_from_node("echo-v1.default", {}, mesh))
    assert not any(x.name.startswith(INBOUND_LISTENER_PREFIX) for x in envoy.listeners)


def test_listener_shape_gRPC_accepts() -> None:
    listener = inbound(golden_mesh(), "echo-v1.default")[inbound_listener_name("10.3.0.1", 50051)]
    assert listener.address.socket_address.address == "10.3.0.1"  # type: ignore[attr-defined]
    assert listener.address.socket_address.port_value == 50051  # type: ignore[attr-defined]
    assert not listener.listener_filters and not listener.HasField("use_original_dst")  # type: ignore[attr-defined]
    (chain,) = listener.filter_chains  # type: ignore[attr-defined]
    (network,) = chain.filters
    hcm = hcm_pb2.HttpConnectionManager()
    network.typed_config.Unpack(hcm)
    (route,) = hcm.route_config.virtual_hosts[0].routes
    assert route.HasField("non_forwarding_action")
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.rbac.DENY",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]


def policy(
    action: Action, *rules: Rule, fail_closed: bool = False, dry_run: bool = False
) -> AuthorizationPolicy:
    name = f"p-{action.lower()}"
    return AuthorizationPolicy(
        name, "default", HERE, action, rules=rules, fail_closed=fail_closed, dry_run=dry_run
    )


JWT_SOURCE = Source_(request_principals=("*",), namespaces=("bank",))
PATH = Operation(paths=("/a",))


@pytest.mark.parametrize(
    ("key", "readable"),
    [
        ("request.headers[x-user]", True),
        ("request.headers[:authority]", True),
        ("request.headers[grpc-timeout]", False),  # gRPC NACKs grpc-* header matchers
        ("request.headers[GRPC-Encoding]", False),
        ("request.headers[:scheme]", False),
        ("request.auth.claims[group]", False),  # Envoy metadata: never matches in gRPC
        ("request.auth.principal", False),
        ("source.ip", True),
        ("destination.port", True),
        ("source.namespace", True),
    ],
)
def test_grpc_readable(key: str, readable: bool) -> None:
    assert grpc_readable(Condition(key, values=("v",))) is readable


@pytest.mark.parametrize(
    ("rule", "action", "expected"),
    [
        (Rule(operations=(PATH,)), "ALLOW", Rule(operations=(PATH,))),
        (Rule(sources=(JWT_SOURCE,)), "ALLOW", None),
        (Rule(conditions=(Condition("request.headers[grpc-x]", ("1",)),)), "ALLOW", None),
        # DENY: kept without what gRPC cannot read (it matches more, never less).
        (
            Rule(sources=(JWT_SOURCE,), operations=(PATH,)),
            "DENY",
            Rule(sources=(Source_(namespaces=("bank",)),), operations=(PATH,)),
        ),
        (
            Rule(
                operations=(PATH,),
                conditions=(
                    Condition("request.auth.claims[g]", ("a",)),
                    Condition("source.ip", ("10.0.0.0/8",)),
                ),
            ),
            "DENY",
            Rule(operations=(PATH,), conditions=(Condition("source.ip", ("10.0.0.0/8",)),)),
        ),
        (
            Rule(sources=(Source_(not_request_principals=("*",)),)),
            "DENY",
            Rule(sources=(Source_(),)),  # denies everyone
        ),
    ],
    ids=["readable", "allow-jwt", "allow-grpc-header", "deny-jwt", "deny-claim", "deny-only-jwt"],
)
def test_grpc_rule(rule: Rule, action: str, expected: Rule | None) -> None:
    assert grpc_rule(rule, action) == expected


def rbac_of(filters: list[hcm_pb2.HttpFilter]) -> dict[str, rbac_pb2.RBAC]:
    out = {}
    for f in filters:
        config = http_rbac_pb2.RBAC()
        f.typed_config.Unpack(config)
        assert not config.HasField("shadow_rules")  # gRPC does not support them
        out[f.name] = config.rules
    return out


def test_rbac_filters_fail_closed() -> None:
    allow_unreadable = policy("ALLOW", Rule(sources=(JWT_SOURCE,)))
    rbac = rbac_of(grpc_rbac_filters([allow_unreadable]))
    # The ALLOW filter stays, with no policy: it denies every request.
    assert list(rbac) == ["envoy.filters.http.rbac"]
    assert rbac["envoy.filters.http.rbac"].action == rbac_pb2.RBAC.ALLOW
    assert not rbac["envoy.filters.http.rbac"].policies
    # No policy, AUDIT, dry run: no filter (nothing enforced).
    assert grpc_rbac_filters([]) == []
    audit = policy("AUDIT", Rule())
    dry = policy("DENY", Rule(), dry_run=True)
    assert grpc_rbac_filters([audit, dry]) == []
    # An invalid policy denies all, whatever its action.
    broken = policy("ALLOW", fail_closed=True)
    rbac = rbac_of(grpc_rbac_filters([broken]))
    (deny,) = rbac["envoy.filters.http.rbac.DENY"].policies.values()
    assert deny.permissions[0].any and deny.principals[0].any
    assert "envoy.filters.http.rbac" not in rbac


def test_golden_rbac_matchers_are_ones_grpc_reads() -> None:
    """No metadata matcher (never matches in gRPC), no grpc-* or :scheme
    header matcher (NACKed), no CEL condition, in any listener sent."""
    mesh = golden_mesh()
    for listener in inbound(mesh, "echo-v1.default").values():
        hcm = hcm_pb2.HttpConnectionManager()
        listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)  # type: ignore[attr-defined]
        text = str(rbac_of([f for f in hcm.http_filters if "rbac" in f.name]))
        assert "url_path" in text and "x-tenant" in text  # what it reads is there
        for unsupported in ("metadata", 'name: "grpc-', 'name: ":scheme"', "condition"):
            assert unsupported not in text, (listener.name, unsupported)  # type: ignore[attr-defined]


# -- mTLS (gRFC A29, A65) -----------------------------------------------------


def test_strict_port_requires_mesh_client_certificates() -> None:
    listeners = inbound(golden_mesh(), "echo-v1.default")
    plain = listeners[inbound_listener_name("10.3.0.1", 50051)]
    strict = listeners[inbound_listener_name("10.3.0.1", 9090)]  # portLevelMtls STRICT
    assert not plain.filter_chains[0].HasField("transport_socket")  # type: ignore[attr-defined]
    socket = strict.filter_chains[0].transport_socket  # type: ignore[attr-defined]
    context = tls_pb2.DownstreamTlsContext()
    socket.typed_config.Unpack(context)
    assert socket.name == "envoy.transport_sockets.tls"
    assert context.require_client_certificate.value
    common = context.common_tls_context
    assert common.tls_certificate_provider_instance.instance_name == "default"
    validation = common.combined_validation_context.default_validation_context
    assert validation.ca_certificate_provider_instance.certificate_name == "ROOTCA"


def own_clusters(mesh: MeshConfig, node_id: str = "echo-v1.default") -> dict[str, object]:
    proxy = proxy_from_node(node_id, GRPC, mesh)
    return {c.name: c for c in build_proxy_resources(mesh, proxy).own_clusters}


def upstream(cluster: object) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)  # type: ignore[attr-defined]
    return context


def test_clients_get_mtls_clusters_for_strict_servers() -> None:
    clusters = own_clusters(golden_mesh())
    assert list(clusters) == ["outbound|8080||echo.default.svc.cluster.local"]
    (cluster,) = clusters.values()
    assert not cluster.transport_socket_matches  # type: ignore[attr-defined]
    validation = upstream(cluster).common_tls_context.combined_validation_context
    sans = validation.default_validation_context.match_subject_alt_names
    assert [m.exact for m in sans] == ["spiffe://cluster.local/ns/default/sa/echo"]


RULES = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {selector: {app: echo}, ports: [{name: grpc, port: 50051}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-1}
spec: {address: 10.0.0.1, labels: {app: echo}, serviceAccount: echo}
"""


STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: all}
spec: {mtls: {mode: STRICT}}
"""


def rule_tls(mode: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec: {{host: echo, trafficPolicy: {{tls: {{mode: {mode}}}}}}}
"""


@pytest.mark.parametrize(
    ("extra", "tls"),
    [
        ([], False),
        ([STRICT], True),
        ([rule_tls("ISTIO_MUTUAL")], True),
        ([STRICT, rule_tls("DISABLE")], False),
    ],
    ids=["permissive", "strict", "istio-mutual", "rule-disables"],
)
def test_client_mtls_follows_server_mode_and_rule(
    tmp_path: Path, extra: list[str], tls: bool
) -> None:
    (tmp_path / "mesh.yaml").write_text("---\n".join([RULES, *extra]))
    result = load_dir(tmp_path)
    assert result.mesh is not None, result.diagnostics
    clusters = own_clusters(result.mesh, "echo-1.default")
    assert bool(clusters) is tls
    for cluster in clusters.values():
        assert upstream(cluster).common_tls_context.HasField("tls_certificate_provider_instance")


def test_secure_grpc_bootstrap(tmp_path: Path) -> None:
    workload = golden_mesh().workloads_by_id["echo-v1.default"]
    files = BootstrapCredentials(
        tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "root.pem", "spiffe://x"
    )
    boot = build_grpc_bootstrap(workload, ("127.0.0.1", 15012), files)
    (server,) = boot["xds_servers"]
    config = {
        "certificate_file": str(tmp_path / "cert.pem"),
        "private_key_file": str(tmp_path / "key.pem"),
        "ca_certificate_file": str(tmp_path / "root.pem"),
    }
    assert server["channel_creds"] == [{"type": "tls", "config": config}]
    assert boot["certificate_providers"] == {
        "default": {"plugin_name": "file_watcher", "config": {**config, "refresh_interval": "900s"}}
    }
    assert "certificate_providers" not in build_grpc_bootstrap(workload, ("127.0.0.1", 1))


def test_xds_certificate_names_its_hosts_and_keeps_its_spiffe_id() -> None:
    assert server_hostnames(["10.0.0.5", "cp.example.com", "127.0.0.1"]) == (
        ("cp.example.com", "localhost"),
        ("10.0.0.5", "127.0.0.1", "::1"),
    )
    dns, ips = server_hostnames(["0.0.0.0"])
    assert socket.gethostname() in dns and "0.0.0.0" not in ips
    authority = CertificateAuthority.create_self_signed(trust_domain="cluster.local")
    store = IdentityStore(authority)
    uri = control_plane_identity("cluster.local")
    before = store.get(uri)
    store.set_hostnames(uri, ["localhost"], ["127.0.0.1"])
    issued = store.get(uri)
    assert issued.serial != before.serial  # re-issued with the names
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    store.set_hostnames(uri, ["localhost"], ["127.0.0.1"])
    assert store.get(uri).serial == issued.serial  # the same names: kept
