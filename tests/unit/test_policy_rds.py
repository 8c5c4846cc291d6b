"""AuthorizationPolicy and PeerAuthentication STRICT travel in route
configurations (RDS), never in HTTP listeners: Envoy applies an RDS update to
the next request of every open connection, a listener update only to new
connections (old ones stay on the old filter chain until it drains).
The same through real Envoys: tests/e2e/test_policy_next_request.py."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.translate.authz import RBAC_FILTERS, STRICT_MTLS_RULE
from sailplane.xds import CLUSTER, LISTENER, ROUTE, Snapshot, SnapshotCache

REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-1}
spec: {address: 10.0.0.1, labels: {app: backend}, serviceAccount: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-1}
spec: {address: 10.0.0.2, labels: {app: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: gateway-1}
spec: {address: 10.0.0.3, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-gateway}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: backend}
"""

DENY_ALL = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec: {}
"""

AUDIT_BACKEND = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit}
spec:
  selector: {matchLabels: {app: backend}}
  action: AUDIT
  rules: [{}]
"""


def peer_authentication(mode: str) -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  mtls: {{mode: {mode}}}
"""


NODES = ("backend-1.default", "client-1.default", "gateway-1.default")


def mesh_of(*texts: str) -> MeshConfig:
    result = load_texts(
        [("registry.yaml", REGISTRY)] + [(f"t{i}.yaml", t) for i, t in enumerate(texts)]
    )
    assert result.mesh is not None, [d.format() for d in result.diagnostics]
    return result.mesh


def connected(mesh: MeshConfig) -> Controller:
    controller = Controller(SnapshotCache())
    controller.apply(mesh)
    for node in NODES:
        controller.admit(proxy_from_node(node, {}, mesh))
    return controller


def snapshot(controller: Controller, node: str) -> Snapshot:
    found = controller.cache.get(node)
    assert found is not None
    return found


def hcms(snapshot: Snapshot) -> list[hcm_pb2.HttpConnectionManager]:
    out = []
    for listener in snapshot.get(LISTENER).messages.values():
        assert isinstance(listener, listener_pb2.Listener)
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                manager = hcm_pb2.HttpConnectionManager()
                if network_filter.typed_config.Unpack(manager):
                    out.append(manager)
    return out


def per_route_rbac(snapshot: Snapshot, name: str) -> dict[str, Any]:
    """Filter name -> the RBAC rules a route configuration's virtual hosts give it."""
    config = snapshot.get(ROUTE).messages[name]
    assert isinstance(config, route_pb2.RouteConfiguration)
    out: dict[str, Any] = {}
    for vhost in config.virtual_hosts:
        for filter_name, packed in vhost.typed_per_filter_config.items():
            per_route = http_rbac_pb2.RBACPerRoute()
            assert packed.Unpack(per_route)
            out[filter_name] = per_route.rbac.rules
    return out


def test_a_policy_change_is_an_rds_only_push() -> None:
    controller = connected(mesh_of())
    before = {node: snapshot(controller, node) for node in NODES}
    controller.apply(mesh_of(DENY_ALL))  # namespace-wide: the backend and the gateway
    for node in NODES:
        old, new = before[node], snapshot(controller, node)
        # The listener's bytes do not depend on policy: no filter chain is
        # replaced, so no open connection is left on an old one.
        assert new.version(LISTENER) == old.version(LISTENER), node
        assert new.version(CLUSTER) == old.version(CLUSTER), node
        # The client has no inbound port: nothing of it moves, nothing is pushed.
        moved = node != "client-1.default"
        assert (new.version(ROUTE) != old.version(ROUTE)) is moved, node


def test_the_inbound_route_carries_the_policies() -> None:
    controller = connected(mesh_of(DENY_ALL, AUDIT_BACKEND))
    rules = per_route_rbac(snapshot(controller, "backend-1.default"), "inbound|5000||")
    assert set(rules) == {RBAC_FILTERS["ALLOW"], RBAC_FILTERS["AUDIT"]}
    assert not rules[RBAC_FILTERS["ALLOW"]].policies  # ALLOW with no rules: denies all
    assert rules[RBAC_FILTERS["AUDIT"]].action == 2  # LOG
    # The gateway's routes too; the AUDIT policy does not select it.
    rules = per_route_rbac(snapshot(controller, "gateway-1.default"), "http.80")
    assert set(rules) == {RBAC_FILTERS["ALLOW"]}


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_strict_requires_an_authenticated_peer_per_route(mode: str) -> None:
    controller = connected(mesh_of(peer_authentication(mode)))
    rules = per_route_rbac(snapshot(controller, "backend-1.default"), "inbound|5000||")
    if mode != "STRICT":
        assert rules == {}
        return
    deny = rules[RBAC_FILTERS["DENY"]]
    assert list(deny.policies) == [STRICT_MTLS_RULE]
    (principal,) = deny.policies[STRICT_MTLS_RULE].principals
    assert principal.not_id.HasField("authenticated")
    assert not principal.not_id.authenticated.HasField("principal_name")


def test_per_route_configs_name_the_filters_of_the_hcm_that_routes_them() -> None:
    """Envoy binds typed_per_filter_config to a filter by the HttpFilter's
    name: a key that names no filter would enforce nothing."""
    controller = connected(mesh_of(DENY_ALL, AUDIT_BACKEND, peer_authentication("STRICT")))
    for node in ("backend-1.default", "gateway-1.default"):
        current = snapshot(controller, node)
        policed = 0
        for manager in hcms(current):
            rules = per_route_rbac(current, manager.rds.route_config_name)
            if not rules:
                continue  # the outbound route table: no policy there
            names = [f.name for f in manager.http_filters]
            assert set(rules) <= set(names), (node, manager.rds.route_config_name)
            # The same filters whatever the policy; never Envoy's fallback name.
            assert [n for n in names if "rbac" in n] == list(RBAC_FILTERS.values())
            policed += 1
        assert policed == 1, node


def test_strict_changes_listener_and_routes_and_an_unchanged_proxy_pushes_nothing() -> None:
    controller = connected(mesh_of(DENY_ALL))
    before = {node: snapshot(controller, node) for node in NODES}
    controller.apply(mesh_of(DENY_ALL, peer_authentication("STRICT")))
    backend = snapshot(controller, "backend-1.default")
    old = before["backend-1.default"]
    assert backend.version(LISTENER) != old.version(LISTENER)  # mTLS-only filter chain
    assert backend.version(ROUTE) != old.version(ROUTE)  # ... and the rule for open connections
    for node in ("client-1.default", "gateway-1.default"):
        for type_url in (LISTENER, ROUTE):
            assert snapshot(controller, node).version(type_url) == before[node].version(type_url)
