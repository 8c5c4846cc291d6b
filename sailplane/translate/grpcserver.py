"""Proxyless gRPC servers (gRFC A36; Istio's grpcgen ``buildInboundListeners``):
the Listener an xDS-enabled gRPC server asks for before it serves a port.

The server names it from the bootstrap's
``server_listener_resource_name_template`` (Istio's, which `sailplane
bootstrap --grpc` writes): ``xds.istio.io/grpc/lds/inbound/IP:PORT``, its
listening address (``[IP]:PORT`` for IPv6). sailplane answers only for the
workload's own address and a port of a Service that selects it (Istio
matches the port only); any other name is absent, and the server stays
"not serving" (A36: the Listener's address must be the one it listens on).

The Listener is Istio's: its address, one filter chain whose HTTP
connection manager carries an inline route configuration whose one route
is a ``non_forwarding_action`` (A36: the server's routes only select the
filters' per-route config), and the filters: RBAC (grpcauthz.py, A41),
then the router; under a STRICT PeerAuthentication, mTLS (grpctls.py, A29).
No listener filters, no ``use_original_dst``: gRPC NACKs either.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.hosts import is_ip_address
from sailplane.model.mesh import MeshConfig
from sailplane.translate.authz import policies_for
from sailplane.translate.common import HCM_FILTER, pack, socket_address
from sailplane.translate.grpcauthz import grpc_rbac_filters
from sailplane.translate.grpctls import grpc_downstream_socket
from sailplane.translate.listeners import inbound_ports
from sailplane.translate.proxy import Proxy

# Istio's grpcxds.ServerListenerNamePrefix / ServerListenerNameTemplate.
INBOUND_LISTENER_PREFIX = "xds.istio.io/grpc/lds/inbound/"
SERVER_LISTENER_TEMPLATE = INBOUND_LISTENER_PREFIX + "%s"
ROUTER_FILTER = "envoy.filters.http.router"


def inbound_listener_name(address: str, port: int) -> str:
    """The name a gRPC server listening on ``address:port`` asks LDS for."""
    host = f"[{address}]" if ":" in address else address
    return f"{INBOUND_LISTENER_PREFIX}{host}:{port}"


def build_grpc_inbound_listeners(mesh: MeshConfig, proxy: Proxy) -> list[listener_pb2.Listener]:
    """Pure: one Listener per port of the Services that select the workload,
    at its WorkloadEntry address (none for a DNS name: a server listens on,
    and so asks for, an IP address)."""
    address = proxy.workload.address
    if not is_ip_address(address):
        return []
    policies = policies_for(mesh, proxy.workload)
    return [
        listener_pb2.Listener(
            name=inbound_listener_name(address, port),
            address=socket_address(address, port),
            filter_chains=[
                build_grpc_inbound_chain(
                    port, policies, mesh.mtls_mode(proxy.workload, port) == "STRICT"
                )
            ],
        )
        for port in inbound_ports(proxy, mesh)
    ]


def build_grpc_inbound_chain(
    port: int, policies: list[AuthorizationPolicy], strict: bool = False
) -> listener_components_pb2.FilterChain:
    """Plaintext, or mTLS with a client certificate required when ``strict``
    (grpctls.py: gRPC has no PERMISSIVE)."""
    filters = [
        *grpc_rbac_filters(policies),
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
    ]
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_{port}",
        # Inline, as Istio (grpc-go#4924): the route only selects per-route
        # filter configs; gRPC serves the RPC itself.
        route_config=route_pb2.RouteConfiguration(
            name="inbound",
            virtual_hosts=[
                rc.VirtualHost(
                    name="inbound",
                    domains=["*"],
                    routes=[
                        rc.Route(
                            match=rc.RouteMatch(prefix="/"),
                            non_forwarding_action=rc.NonForwardingAction(),
                        )
                    ],
                )
            ],
        ),
        http_filters=filters,
    )
    chain = listener_components_pb2.FilterChain(
        name="inbound-mtls" if strict else "inbound-plaintext",
        filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))],
    )
    if strict:
        chain.transport_socket.CopyFrom(grpc_downstream_socket())
    return chain
