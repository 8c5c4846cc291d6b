"""Proxyless gRPC clients (#21): Istio's node id form, who is proxyless,
what it is sent, its bootstrap, and the trust rules unchanged."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2

from sailplane.ca import CertificateAuthority
from sailplane.config.loader import load_dir
from sailplane.errors import IdentityMismatch, UnknownProxy
from sailplane.model.mesh import MeshConfig
from sailplane.server.admission import admitted_proxy
from sailplane.translate import proxy_from_node
from sailplane.translate.build import build_proxy_resources, build_routes
from sailplane.translate.grpcbootstrap import build_grpc_bootstrap
from sailplane.translate.proxy import Role, workload_id
from tests.support.procs import PYTHON

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "config" / "proxyless-grpc" / "in"
GRPC = {"GENERATOR": "grpc"}
ISTIO_ID = "sidecar~10.3.0.9~grpc-client.default~default.svc.cluster.local"

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: grpc-client}
spec: {address: 10.0.0.1, labels: {app: client}, serviceAccount: client}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vault, namespace: bank}
spec: {address: 10.0.0.2, labels: {app: vault}, serviceAccount: vault}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {app: client}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""


def golden_mesh() -> MeshConfig:
    mesh = load_dir(GOLDEN).mesh
    assert mesh is not None
    return mesh


@pytest.fixture
def small_mesh(tmp_path: Path) -> MeshConfig:
    (tmp_path / "mesh.yaml").write_text(MESH)
    mesh = load_dir(tmp_path).mesh
    assert mesh is not None
    return mesh


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        ("grpc-client.default", "grpc-client.default"),
        (ISTIO_ID, "grpc-client.default"),
        ("router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local", "gw.istio-system"),
        # Malformed Istio ids are left as they are (and so refused as unknown).
        ("sidecar~10.0.0.1~grpc-client.default~bank.svc.cluster.local", None),
        ("sidecar~10.0.0.1~grpc-client.default", None),
        ("a~b~c~d~e", None),
    ],
    ids=["plain", "istio", "istio-router", "other-namespace-domain", "three-parts", "five-parts"],
)
def test_workload_id(node_id: str, expected: str | None) -> None:
    assert workload_id(node_id) == (expected or node_id)


def test_istio_id_resolves_and_lies_are_refused(small_mesh: MeshConfig) -> None:
    proxy = proxy_from_node(ISTIO_ID.replace("10.3.0.9", "10.9.9.9"), GRPC, small_mesh)
    assert proxy.id == "grpc-client.default" and proxy.proxyless
    # A gRPC client is never a gateway, even where a Gateway selects it.
    assert proxy.role is Role.SIDECAR
    assert proxy_from_node("grpc-client.default", {}, small_mesh).role is Role.GATEWAY
    with pytest.raises(UnknownProxy):
        proxy_from_node("sidecar~10.0.0.1~nobody.default~default.svc.cluster.local", {}, small_mesh)


@pytest.mark.parametrize(
    "node_id",
    ["vault.bank", "sidecar~10.0.0.1~vault.bank~bank.svc.cluster.local"],
    ids=["plain", "istio"],
)
def test_a_node_claiming_another_workload_on_the_mtls_port_is_refused(
    small_mesh: MeshConfig, node_id: str
) -> None:
    """The lie: the client's certificate, another workload's id. Both id
    forms are refused alike; the true one is admitted in both forms."""
    ca = CertificateAuthority.create_self_signed()
    client_pem = ca.issue_workload("default", "client").cert_chain_pem
    node = base_pb2.Node(id=node_id)
    node.metadata.CopyFrom(
        struct_pb2.Struct(fields={"GENERATOR": struct_pb2.Value(string_value="grpc")})
    )
    with pytest.raises(IdentityMismatch, match=r"vault\.bank"):
        admitted_proxy(node, client_pem, small_mesh)
    truthful = base_pb2.Node(
        id=node_id.replace("vault.bank", "grpc-client.default").replace("~bank.svc", "~default.svc")
    )
    proxy = admitted_proxy(truthful, client_pem, small_mesh)
    assert proxy.proven_identity == "spiffe://cluster.local/ns/default/sa/client"


def test_proxyless_resources() -> None:
    mesh = golden_mesh()
    proxy = proxy_from_node("grpc-client.default", GRPC, mesh)
    own = build_proxy_resources(mesh, proxy)
    assert own.own_clusters == () and own.own_routes == ()
    names = [x.name for x in own.listeners]
    assert names == [
        "echo.default.svc.cluster.local:50051",
        "echo.default.svc:50051",
        "echo.default:50051",
        "echo:50051",
        # Another namespace's service: its FQDN only, as Istio's tryFindFQDN.
        "ledger.bank.svc.cluster.local:7070",
    ]
    for listener in own.listeners:
        hcm = hcm_pb2.HttpConnectionManager()
        assert listener.api_listener.api_listener.Unpack(hcm)
        assert hcm.http_filters[-1].name == "envoy.filters.http.router"
        assert {f.name for f in hcm.http_filters} <= {
            "envoy.filters.http.fault",
            "envoy.filters.http.router",
        }
    routes = build_routes(mesh, proxy)
    assert [r.name for r in routes] == [
        "outbound|50051||echo.default.svc.cluster.local",
        "outbound|7070||ledger.bank.svc.cluster.local",
    ]
    by_name = {r.name: r for r in routes[0].virtual_hosts[0].routes}
    split = by_name["split"]
    assert split.route.max_stream_duration.max_stream_duration.seconds == 3
    assert list(split.typed_per_filter_config) == []  # CORS left out: gRPC would NACK it
    quota = fault_pb2.HTTPFault()  # Istio's grpcStatus, by name, as gRPC's code
    assert by_name["quota"].typed_per_filter_config["envoy.filters.http.fault"].Unpack(quota)
    assert (quota.abort.grpc_status, quota.abort.percentage.numerator) == (8, 250_000)
    # The same workload as an Envoy gets the sidecar's resources.
    envoy = build_proxy_resources(mesh, proxy_from_node("grpc-client.default", {}, mesh))
    assert not any(x.HasField("api_listener") for x in envoy.listeners)


def test_grpc_bootstrap(tmp_path: Path) -> None:
    mesh = golden_mesh()
    workload = mesh.workloads_by_id["grpc-client.default"]
    boot = build_grpc_bootstrap(workload, ("::1", 15010))
    assert boot["xds_servers"] == [
        {
            "server_uri": "[::1]:15010",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ]
    assert boot["node"]["id"] == "grpc-client.default"
    assert boot["node"]["metadata"] == {"GENERATOR": "grpc", "NAMESPACE": "default"}
    out = tmp_path / "bootstrap.json"
    argv = [PYTHON, "-m", "sailplane", "bootstrap", "grpc-client", "--grpc", "--plaintext"]
    argv += ["--config-dir", str(GOLDEN), "--xds-address", "127.0.0.1:15010", "-o", str(out)]
    subprocess.run(argv, check=True, capture_output=True)
    assert json.loads(out.read_text())["node"]["metadata"]["GENERATOR"] == "grpc"
    refused = subprocess.run([*argv, "--delta"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--grpc" in refused.stderr
    # The mTLS port: tls channel credentials (tests/unit/test_proxyless_grpc_server.py).
    secure = [a for a in argv if a != "--plaintext"] + ["--ca-dir", str(tmp_path / "ca")]
    subprocess.run(secure, check=True, capture_output=True)
    assert json.loads(out.read_text())["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
    # Replicas of the control plane: one server each, in order (gRFC A71 fallback).
    subprocess.run([*secure, "--xds-address", "sailplane-b:15012"], check=True)
    servers = json.loads(out.read_text())["xds_servers"]
    assert [s["server_uri"] for s in servers] == ["127.0.0.1:15010", "sailplane-b:15012"]
    assert all(s["channel_creds"][0]["type"] == "tls" for s in servers)


def test_status_shows_missing_names() -> None:
    from sailplane.cli.status import format_status
    from sailplane.xds.server.status import SyncState, TypeStatus

    status = TypeStatus(sent="v1", acked="v1", missing=("echo:9999",))
    assert status.state is SyncState.MISSING
    assert status.to_json()["missing"] == ["echo:9999"]
    assert "missing" not in TypeStatus(sent="v1", acked="v1").to_json()
    stream = {"proxy": "grpc-client.default", "types": {"listeners": status.to_json()}}
    text = format_status([stream])
    assert "grpc-client.default listeners: MISSING echo:9999" in text
