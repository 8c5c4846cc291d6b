"""Gateway proxies: listeners from ``Gateway`` servers, routes from the
VirtualServices bound to them (``gateways: [name]``).

As Istio: route configurations are named ``http.PORT`` (``https.PORT.NAME``
for TLS servers); virtual hosts are the intersection of the VirtualService
hosts and the server hosts; VirtualServices for the same host on one gateway
are merged in order.
"""

from __future__ import annotations

from typing import NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailplane.model.credentials import missing_credentials
from sailplane.model.gatewayports import gateway_port
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import Gateway, GatewayServer
from sailplane.model.registry import selector_matches
from sailplane.model.telemetry import WorkloadTelemetry, telemetry_for
from sailplane.translate import names
from sailplane.translate.authz import http_rbac_filters, http_rbac_per_route, policies_for
from sailplane.translate.common import HCM_FILTER, pack, socket_address
from sailplane.translate.jwt import jwt_filters, request_authentications_for
from sailplane.translate.listeners import bind_address, http_connection_manager, network_filter
from sailplane.translate.proxy import Proxy
from sailplane.translate.routes import add_per_route_rbac, route_context, virtual_service_routes
from sailplane.translate.telemetry import decorate_http, decorate_tcp
from sailplane.translate.tlscredentials import downstream_tls_context
from sailplane.translate.tlsroute import (
    bound,
    intersect,
    is_passthrough,
    passthrough_chains,
    sni_dnat_clusters,
    tcp_filter,
    tcp_proxy_to,
)


def selecting_gateways(mesh: MeshConfig, proxy: Proxy) -> list[Gateway]:
    return [
        g
        for g in mesh.gateways
        if g.selector and selector_matches(g.selector, proxy.workload.labels)
    ]


def bind_port(mesh: MeshConfig, proxy: Proxy, server: GatewayServer) -> int:
    """The port the gateway listens on for a server: through the gateway's
    Service, as Istio maps it (see model/gatewayports.py: 443 -> 8443)."""
    return gateway_port(mesh, proxy.workload, server).number


def gateway_address(proxy: Proxy) -> str:
    return bind_address(proxy.workload.address)


def _route_name(server: GatewayServer, index: int) -> str:
    if server.tls is not None and server.protocol in ("HTTPS", "TLS"):
        return f"https.{server.port}.{server.name or index}"
    return f"http.{server.port}"


def _server_route_config(
    mesh: MeshConfig, gateway: Gateway, servers: list[GatewayServer], name: str
) -> route_pb2.RouteConfiguration:
    vhosts: dict[str, list[rc.Route]] = {}
    port = servers[0].port
    for vs in bound(mesh, gateway):
        hosts: list[str] = []
        for server in servers:
            for namespace, server_host in server.hosts:
                if namespace not in ("*", vs.namespace):
                    continue
                for vs_host in vs.hosts:
                    found = intersect(vs_host, server_host)
                    if found is not None and found not in hosts:
                        hosts.append(found)
        for host in hosts:
            vhosts.setdefault(host, []).extend(
                virtual_service_routes(mesh, vs, port, {}, gateway.namespace, gateway.key)
            )
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            rc.VirtualHost(
                name=f"{host}:{port}",
                domains=["*"] if host == "*" else [host, f"{host}:{port}"],
                routes=routes,
            )
            for host, routes in sorted(vhosts.items())
        ],
        validate_clusters={"value": False},
    )


def _servers_by_port(
    mesh: MeshConfig, proxy: Proxy
) -> dict[int, list[tuple[Gateway, GatewayServer]]]:
    by_port: dict[int, list[tuple[Gateway, GatewayServer]]] = {}
    for gateway in selecting_gateways(mesh, proxy):
        for server in gateway.servers:
            by_port.setdefault(bind_port(mesh, proxy, server), []).append((gateway, server))
    return dict(sorted(by_port.items()))


def build_gateway_routes(
    mesh: MeshConfig, proxy: Proxy
) -> tuple[route_pb2.RouteConfiguration, ...]:
    """The gateway's route configurations, each virtual host carrying the
    gateway workload's AuthorizationPolicies as per-route RBAC (see authz.py:
    a policy change is then an RDS-only push, enforced on open connections)."""
    configs: dict[str, route_pb2.RouteConfiguration] = {}
    for entries in _servers_by_port(mesh, proxy).values():
        for index, (gateway, server) in enumerate(entries):
            if server.protocol not in ("HTTP", "HTTP2", "GRPC", "HTTPS") or is_passthrough(server):
                continue
            name = _route_name(server, index)
            if name in configs:
                # Several Gateways share the port: merge their virtual hosts.
                extra = _server_route_config(mesh, gateway, [server], name)
                merged = {v.name: v for v in configs[name].virtual_hosts}
                for vhost in extra.virtual_hosts:
                    if vhost.name in merged:
                        merged[vhost.name].routes.extend(vhost.routes)
                    else:
                        merged[vhost.name] = vhost
                configs[name] = route_pb2.RouteConfiguration(
                    name=name,
                    virtual_hosts=sorted(merged.values(), key=lambda v: v.name),
                    validate_clusters={"value": False},
                )
            else:
                configs[name] = _server_route_config(mesh, gateway, [server], name)
    rbac = http_rbac_per_route(policies_for(mesh, proxy.workload))
    for config in configs.values():
        for vhost in config.virtual_hosts:
            add_per_route_rbac(vhost, rbac)
    return tuple(sorted(configs.values(), key=lambda c: c.name))


def _tcp_proxy(
    mesh: MeshConfig, gateway: Gateway, server: GatewayServer
) -> tcp_proxy_pb2.TcpProxy | None:
    """The first TCP route of a bound VirtualService that applies to the server's
    port; several destinations become weighted clusters (Istio's TCPRoute)."""
    ctx = route_context(mesh, server.port)
    for vs in bound(mesh, gateway):
        for tcp in vs.tcp:
            if tcp.match and not any(m.port in (None, server.port) for m in tcp.match):
                continue
            proxy = tcp_proxy_to(ctx, tcp.route)
            if proxy is not None:
                return proxy
    return None


class _Shared(NamedTuple):
    """What every server of a gateway proxy shares: computed once per proxy."""

    address: str
    telemetry: WorkloadTelemetry
    jwt: list[hcm_pb2.HttpFilter]


def _server_chains(
    mesh: MeshConfig,
    proxy: Proxy,
    gateway: Gateway,
    server: GatewayServer,
    index: int,
    taken: set[str],
    shared: _Shared,
    port: int,
) -> list[listener_components_pb2.FilterChain]:
    """The filter chains of one server: SNI-routed TCP for passthrough, else
    one chain (HTTP or TCP, terminating TLS when the server has it). A
    server whose credentialName cannot be served gets none (checks.py says
    which Secret is missing), as Istio's listener never has its certificate."""
    if is_passthrough(server):
        chains = []
        for chain, tcp in passthrough_chains(mesh, gateway, server, taken):
            decorate_tcp(tcp, proxy, shared.telemetry, outbound=True)
            chain.filters.append(tcp_filter(tcp))
            chains.append(chain)
        return chains
    tls = server.tls if server.protocol in ("HTTPS", "TLS") else None
    if tls is not None and missing_credentials(mesh.secrets, proxy.namespace, tls):
        return []
    tcp = None
    if server.protocol in ("TCP", "TLS", "MONGO"):
        tcp = _tcp_proxy(mesh, gateway, server)
        if tcp is None:
            return []
    hosts = [h for _, h in server.hosts if h != "*"]
    if tls is not None:
        if any(h in taken for h in hosts) or (not hosts and "" in taken):
            return []  # a second server on the same port and hosts: the first wins
        taken.update(hosts or [""])
    chain = listener_components_pb2.FilterChain()
    if tcp is not None:
        decorate_tcp(tcp, proxy, shared.telemetry, outbound=True)
        chain.filters.append(tcp_filter(tcp))
    else:
        manager = http_connection_manager(
            f"outbound_{shared.address}_{port}",
            _route_name(server, index),
            [*shared.jwt, *http_rbac_filters()],
        )
        decorate_http(manager, proxy, shared.telemetry, outbound=True)
        chain.filters.append(network_filter(HCM_FILTER, manager))
    if tls is not None:
        chain.filter_chain_match.server_names.extend(hosts)
        chain.transport_socket.name = "envoy.transport_sockets.tls"
        chain.transport_socket.typed_config.CopyFrom(pack(downstream_tls_context(tls)))
    return [chain]


def build_gateway_listeners(mesh: MeshConfig, proxy: Proxy) -> list[listener_pb2.Listener]:
    listeners = []
    address = gateway_address(proxy)
    shared = _Shared(
        address,
        telemetry_for(mesh, proxy.workload),
        jwt_filters(request_authentications_for(mesh, proxy.workload)),
    )
    for port, entries in _servers_by_port(mesh, proxy).items():
        listener = listener_pb2.Listener(
            name=names.listener_name(address, port),
            address=socket_address(address, port),
            traffic_direction=2,  # OUTBOUND, as Istio marks gateway listeners
        )
        taken: set[str] = set()  # SNI names matched on this port
        for index, (gateway, server) in enumerate(entries):
            for chain in _server_chains(mesh, proxy, gateway, server, index, taken, shared, port):
                if any(
                    c.filter_chain_match == chain.filter_chain_match for c in listener.filter_chains
                ):
                    continue  # a second server on the same port and match: the first wins
                listener.filter_chains.append(chain)
        if any(c.filter_chain_match.server_names for c in listener.filter_chains) or any(
            c.HasField("transport_socket") for c in listener.filter_chains
        ):
            listener.listener_filters.append(
                listener_components_pb2.ListenerFilter(
                    name="envoy.filters.listener.tls_inspector",
                    typed_config=pack(tls_inspector_pb2.TlsInspector()),
                )
            )
        if listener.filter_chains:
            listeners.append(listener)
    return listeners


def gateway_own_clusters(mesh: MeshConfig, proxy: Proxy) -> list[cluster_pb2.Cluster]:
    """The SNI-DNAT clusters of the gateway's AUTO_PASSTHROUGH servers."""
    servers = [s for g in selecting_gateways(mesh, proxy) for s in g.servers]
    return sni_dnat_clusters(mesh, servers)
