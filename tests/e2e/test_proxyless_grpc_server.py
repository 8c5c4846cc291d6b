"""Proxyless gRPC servers (#21, gRFC A36, A41): grpcio's xDS-enabled server
asks sailplane for ``xds.istio.io/grpc/lds/inbound/IP:PORT`` and serves only
once it has it, enforcing the AuthorizationPolicies in it (RBAC evaluated
by gRPC itself); a proxyless client calls it through sailplane. No Envoy.

A policy change is a Listener update: the server drains its connections
(A36), and the client's next RPCs go over new ones, under the new rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.grpcxds import (
    GrpcClient,
    grpc_bootstrap,
    missing_listeners,
    no_nacks,
    start_xds_server,
)
from tests.support.mesh import Mesh, WorkloadSpec
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

PORT = 50061
TARGET = f"xds:///echo:{PORT}"
PREFIX = "xds.istio.io/grpc/lds/inbound/"


def policy(name: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "echo"}}, "action": action, "rules": rules},
    }


def paths(*values: str) -> dict[str, Any]:
    return {"to": [{"operation": {"paths": list(values)}}]}


@pytest.fixture
def server_mesh(mesh: Mesh) -> Iterator[tuple[Mesh, WorkloadSpec, GrpcClient]]:
    """echo as an xDS-enabled server, a proxyless client, both with
    `sailplane bootstrap --grpc --plaintext`."""
    echo = mesh.workload("echo", {"app": "echo", "version": "v1"}, port=PORT)
    client = mesh.workload("grpc-client", {"app": "grpc-client"})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"name": "grpc", "port": PORT}]},
    }
    mesh.write_registry([service])
    mesh.start_control_plane()
    start_xds_server(mesh, echo, grpc_bootstrap(mesh, echo, "--plaintext"), PORT)
    grpc_client = GrpcClient(
        grpc_bootstrap(mesh, client, "--plaintext"), mesh.group.log_dir / "grpc-client.log"
    )
    try:
        yield mesh, echo, grpc_client
    finally:
        grpc_client.stop()


def test_server_serves_its_listener_with_rbac(
    server_mesh: tuple[Mesh, WorkloadSpec, GrpcClient],
) -> None:
    mesh, _echo, client = server_mesh
    # It serves only under sailplane's listener (A36: not serving before).
    assert client.run(TARGET, 5) == {"v1": 5}
    assert client.run(TARGET, 1, method="Other") == {"v1": 1}
    # DENY one method: PERMISSION_DENIED for it, the other still served.
    mesh.write("authz.yaml", [policy("no-other", "DENY", [paths("/echo.Echo/Other")])])
    wait_for(
        lambda: client.run(TARGET, 1, method="Other") == {"PERMISSION_DENIED": 1},
        timeout=10,
        what="the DENY policy",
    )
    assert client.run(TARGET, 20) == {"v1": 20}
    # ALLOW another path only: a client that matches no ALLOW rule is refused.
    # (With more of what gRPC evaluates: peer address, namespace, method.)
    only_other = {
        "from": [{"source": {"ipBlocks": ["127.0.0.0/8"]}}, {"source": {"namespaces": ["bank"]}}],
        "to": [{"operation": {"methods": ["POST"], "paths": ["/echo.Echo/Other"]}}],
        "when": [{"key": "destination.port", "notValues": ["1"]}],
    }
    mesh.write("authz.yaml", [policy("only-other", "ALLOW", [only_other])])
    wait_for(
        lambda: client.run(TARGET, 1) == {"PERMISSION_DENIED": 1},
        timeout=10,
        what="the ALLOW policy",
    )
    assert client.run(TARGET, 1, method="Other") == {"v1": 1}
    # Rules gRPC cannot evaluate (JWT principals: Envoy metadata, which gRPC
    # never matches, and always matches under a NOT) fail closed: the ALLOW
    # rule is left out (else it would let every request in), the DENY rule
    # is kept without them (else it would deny nothing).
    jwt_deny = {**paths("/echo.Echo/Other"), "from": [{"source": {"requestPrincipals": ["*"]}}]}
    jwt_allow = {"from": [{"source": {"notRequestPrincipals": ["*"]}}]}
    mesh.write(
        "authz.yaml",
        [
            policy("jwt-deny", "DENY", [jwt_deny]),
            policy("jwt-allow", "ALLOW", [jwt_allow]),
            policy("hello", "ALLOW", [paths("/echo.Echo/Hello", "/echo.Echo/Other")]),
        ],
    )
    wait_for(
        lambda: client.run(TARGET, 1, method="Other") == {"PERMISSION_DENIED": 1},
        timeout=10,
        what="the JWT policies",
    )
    assert client.run(TARGET, 10) == {"v1": 10}
    assert client.run(TARGET, 1, method="Nope") == {"PERMISSION_DENIED": 1}
    # Only the unreadable ALLOW rule: the ALLOW filter stays, with no
    # policies, and denies all (Istio's grpcgen would drop it: allow all).
    mesh.write("authz.yaml", [policy("jwt-allow", "ALLOW", [jwt_allow])])
    wait_for(
        lambda: client.run(TARGET, 1) == {"PERMISSION_DENIED": 1},
        timeout=10,
        what="the ALLOW policy with no rule gRPC reads",
    )
    assert client.run(TARGET, 5, method="Other") == {"PERMISSION_DENIED": 5}
    no_nacks(mesh)


def test_server_on_another_port_gets_nothing(
    server_mesh: tuple[Mesh, WorkloadSpec, GrpcClient],
) -> None:
    """A port no Service gives the workload: its listener is absent, and
    sailplane says so (the server waits, not serving)."""
    mesh, echo, _client = server_mesh
    start_xds_server(mesh, echo, mesh.config_dir.parent / "grpc-echo" / "bootstrap.json", PORT + 1)
    wait_for(
        lambda: f"{PREFIX}{echo.address}:{PORT + 1}" in missing_listeners(mesh),
        timeout=10,
        what="the foreign listener MISSING",
    )
    assert f"{PREFIX}{echo.address}:{PORT}" not in missing_listeners(mesh)
    no_nacks(mesh)


STRICT = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "echo-strict", "namespace": "default"},
    "spec": {"selector": {"matchLabels": {"app": "echo"}}, "mtls": {"mode": "STRICT"}},
}


def test_mtls_under_strict(mesh: Mesh) -> None:
    """Both sides with `sailplane bootstrap --grpc` (no --plaintext): xDS
    over mTLS (gRPC checks sailplane's certificate by the host it dials),
    and, as the PeerAuthentication is STRICT, the server requires a mesh
    client certificate (A29 certificate providers) and the client presents
    it, checking the server's SPIFFE identity. A client without one is
    refused."""
    echo = mesh.workload("echo", {"app": "echo", "version": "v1"}, port=PORT)
    client = mesh.workload("grpc-client", {"app": "grpc-client"}, service_account="client")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"name": "grpc", "port": PORT}]},
    }
    mesh.write_registry([service])
    mesh.write("peer.yaml", [STRICT])
    mesh.start_control_plane()
    server_bootstrap = grpc_bootstrap(mesh, echo)
    boot = json.loads(server_bootstrap.read_text())
    (xds_server,) = boot["xds_servers"]
    assert xds_server["server_uri"] == f"127.0.0.1:{mesh.secure_xds_port}"
    assert xds_server["channel_creds"][0]["type"] == "tls"
    assert boot["certificate_providers"]["default"]["plugin_name"] == "file_watcher"
    start_xds_server(mesh, echo, server_bootstrap, PORT)
    grpc_client = GrpcClient(grpc_bootstrap(mesh, client), mesh.group.log_dir / "grpc-client.log")
    try:
        assert grpc_client.run(TARGET, 5) == {"v1": 5}
        # Without a mesh certificate (plaintext, no xDS): refused.
        assert grpc_client.run(f"{echo.address}:{PORT}", 1) == {"UNAVAILABLE": 1}
        # The peer's identity is the client's certificate: RBAC on principals.
        other = {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/other"]}}]}
        mesh.write("authz.yaml", [policy("by-principal", "ALLOW", [other])])
        wait_for(
            lambda: grpc_client.run(TARGET, 1) == {"PERMISSION_DENIED": 1},
            timeout=10,
            what="the ALLOW of another principal",
        )
        only_client = {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}]}
        mesh.write("authz.yaml", [policy("by-principal", "ALLOW", [only_client])])
        wait_for(
            lambda: grpc_client.run(TARGET, 1) == {"v1": 1},
            timeout=10,
            what="the ALLOW of the client's principal",
        )
        streams = mesh.syncz()
        assert {s["proxy"] for s in streams} == {"echo.default", "grpc-client.default"}
        no_nacks(mesh)
    finally:
        grpc_client.stop()
