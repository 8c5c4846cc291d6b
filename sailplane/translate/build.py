"""The per-proxy entry points: mesh + proxy -> that proxy's own resources,
its route tables, and the keys that say which proxies can share them.

Work that does not depend on the proxy (outbound clusters and endpoints) is
built per service (clusters.py, endpoints.py) and shared by every proxy;
route tables are shared by proxies with equal :func:`routes_key`; only a
proxy's listeners, inbound clusters and inbound route configurations (which
carry its AuthorizationPolicies) are its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Protocol
from sailplane.model.telemetry import telemetry_for
from sailplane.translate.authz import policies_for
from sailplane.translate.clusters import build_inbound_cluster, build_selected_clusters
from sailplane.translate.connect import add_tunnels
from sailplane.translate.gateway import (
    build_gateway_listeners,
    build_gateway_routes,
    gateway_own_clusters,
)
from sailplane.translate.grpcgen import build_grpc_resources
from sailplane.translate.grpcserver import build_grpc_inbound_listeners
from sailplane.translate.grpctls import build_grpc_mtls_clusters
from sailplane.translate.jwt import jwt_filters, request_authentications_for
from sailplane.translate.listeners import (
    build_inbound_listener,
    build_outbound_listener,
    inbound_ports,
    serves_http,
)
from sailplane.translate.proxy import Capture, Proxy, Role
from sailplane.translate.routes import (
    build_inbound_route_config,
    build_outbound_route_config,
    route_signature,
)
from sailplane.translate.sidecar_ingress import ingress_cluster, sidecar_ingress
from sailplane.translate.telemetry_export import telemetry_clusters
from sailplane.translate.transparent_inbound import (
    build_virtual_inbound,
    inbound_passthrough_cluster,
    transparent_inbound_cluster,
)
from sailplane.translate.transparent_outbound import build_transparent_outbound
from sailplane.translate.vshosts import add_virtual_service_hosts


@dataclass(frozen=True, slots=True)
class ProxyResources:
    """What only this proxy gets, each sorted by name: its listeners, its
    own clusters (inbound, tracing collectors) and its own route
    configurations (inbound HTTP ports; a gateway's are :func:`build_routes`).
    Everything else it is sent is shared (see sailplane/server/generation.py and
    sailplane/server/routetables.py)."""

    own_clusters: tuple[cluster_pb2.Cluster, ...]
    listeners: tuple[listener_pb2.Listener, ...]
    own_routes: tuple[route_pb2.RouteConfiguration, ...] = ()


def build_routes(mesh: MeshConfig, proxy: Proxy) -> tuple[route_pb2.RouteConfiguration, ...]:
    if proxy.role is Role.GATEWAY:
        return build_gateway_routes(mesh, proxy)
    if proxy.proxyless:
        return build_grpc_resources(mesh, proxy).routes
    sidecar = mesh.sidecar_for(proxy.workload)
    config = build_outbound_route_config(
        mesh,
        proxy.namespace,
        proxy.workload.labels,
        sidecar,
        mesh.outbound_mode(proxy.workload),
    )
    labels = proxy.workload.labels
    config = add_virtual_service_hosts(config, mesh, proxy.namespace, labels, sidecar)
    return (add_tunnels(config, mesh, proxy.namespace, labels, sidecar),)


def own_route_tables(proxy: Proxy) -> bool:
    """Whether :func:`build_routes` is the proxy's own (a gateway's, a
    proxyless gRPC client's) rather than a shared sidecar route table."""
    return proxy.role is Role.GATEWAY or proxy.proxyless


def routes_key(mesh: MeshConfig, proxy: Proxy) -> tuple[object, ...]:
    """Proxies with equal keys get identical route tables (shared, encoded
    once). Not the outbound listener's port: the table's name does not
    follow it (names.OUTBOUND_ROUTE_NAME), and nothing else in it does."""
    if proxy.role is Role.GATEWAY:
        return ("gateway", proxy.id)
    if proxy.proxyless:
        return ("grpc", proxy.id)
    signature = route_signature(mesh, proxy.workload.labels)
    return (
        "sidecar",
        proxy.namespace,
        signature,
        scope_key(mesh, proxy),
        mesh.outbound_mode(proxy.workload),
    )


def scope_key(mesh: MeshConfig, proxy: Proxy) -> str:
    """Proxies under the same Sidecar (egress scope) see the same clusters."""
    if proxy.role is Role.GATEWAY:
        return ""
    sidecar = mesh.sidecar_for(proxy.workload)
    return sidecar.key if sidecar is not None and sidecar.egress_hosts is not None else ""


def cluster_in_scope(mesh: MeshConfig, proxy: Proxy, cluster_name: str) -> bool:
    """Whether an outbound cluster is visible under the proxy's Sidecar."""
    sidecar = mesh.sidecar_for(proxy.workload) if proxy.role is Role.SIDECAR else None
    parts = cluster_name.split("|")
    if sidecar is None or len(parts) != 4 or parts[0] != "outbound":
        return True
    service = mesh.services_by_host.get(parts[3])
    return service is None or sidecar.allows(service.namespace, service.hostname)


def build_proxy_resources(mesh: MeshConfig, proxy: Proxy) -> ProxyResources:
    """Pure: the same mesh and proxy always give the same resources."""
    if proxy.proxyless:
        # gRPC's xDS client: API listeners (grpcgen.py), whose route configs
        # are build_routes() and clusters the shared ones but those it needs
        # mTLS for (grpctls.py); and its xDS server's inbound listeners
        # (grpcserver.py), routes inline.
        grpc_listeners = (
            *build_grpc_resources(mesh, proxy).listeners,
            *build_grpc_inbound_listeners(mesh, proxy),
        )
        return ProxyResources(
            own_clusters=tuple(build_grpc_mtls_clusters(mesh)),
            listeners=tuple(sorted(grpc_listeners, key=lambda x: x.name)),
        )
    telemetry = telemetry_for(mesh, proxy.workload)
    if proxy.role is Role.GATEWAY:
        return ProxyResources(
            own_clusters=tuple(
                sorted(
                    (
                        *telemetry_clusters(telemetry),
                        *_selected(mesh, proxy),
                        *gateway_own_clusters(mesh, proxy),
                    ),
                    key=_name,
                )
            ),
            listeners=tuple(build_gateway_listeners(mesh, proxy)),
        )
    # Sidecar ingress listeners, when set, replace the services' ports.
    by_port = {i.port: i for i in sidecar_ingress(mesh, proxy)}
    ports = (
        {port: i.served_protocol for port, i in by_port.items()}
        if by_port
        else inbound_ports(proxy, mesh)
    )
    modes = {port: mesh.mtls_mode(proxy.workload, port) for port in ports}
    policies = policies_for(mesh, proxy.workload)
    jwt = jwt_filters(request_authentications_for(mesh, proxy.workload))
    transparent = proxy.capture is Capture.TRANSPARENT

    def inbound_cluster(port: int, protocol: Protocol) -> cluster_pb2.Cluster:
        if (ingress := by_port.get(port)) is not None:
            return ingress_cluster(ingress, proxy.app_address)
        if transparent:
            return transparent_inbound_cluster(proxy, port, protocol)
        return build_inbound_cluster(port, proxy.app_address, protocol)

    inbound = [inbound_cluster(port, protocol) for port, protocol in ports.items()]
    if transparent:
        # iptables capture: virtualOutbound / virtualInbound instead of the
        # HTTP proxy and the bound ports (transparent_*.py).
        outbound = build_transparent_outbound(mesh, proxy, telemetry)
        # Port-level modes of ports nothing declares get passthrough chains
        # of their own (Istio's needPerPortPassthroughFilterChain).
        undeclared = {
            port: mesh.mtls_mode(proxy.workload, port)
            for port in mesh.mtls_port_levels(proxy.workload)
            if port not in ports
        }
        listeners = [
            *outbound.listeners,
            build_virtual_inbound(
                proxy,
                ports,
                modes,
                mesh.mtls_mode(proxy.workload),
                mesh.trust_domain,
                policies,
                telemetry,
                by_port,
                jwt,
                undeclared,
            ),
        ]
        inbound.extend((inbound_passthrough_cluster(proxy), *outbound.clusters))
    else:
        listeners = [build_outbound_listener(proxy, telemetry)]
        listeners.extend(
            build_inbound_listener(
                proxy,
                port,
                protocol,
                modes[port],
                mesh.trust_domain,
                policies,
                telemetry,
                ingress.tls if (ingress := by_port.get(port)) is not None else None,
                jwt,
            )
            for port, protocol in ports.items()
        )
    own_clusters = (*inbound, *telemetry_clusters(telemetry), *_selected(mesh, proxy))
    own_routes = [
        build_inbound_route_config(port, policies, modes[port])
        for port, protocol in ports.items()
        if serves_http(protocol)
    ]
    return ProxyResources(
        own_clusters=tuple(sorted(own_clusters, key=lambda c: c.name)),
        listeners=tuple(sorted(listeners, key=lambda x: x.name)),
        own_routes=tuple(sorted(own_routes, key=lambda r: r.name)),
    )


def _selected(mesh: MeshConfig, proxy: Proxy) -> list[cluster_pb2.Cluster]:
    """Outbound clusters of its own, replacing the shared ones of the same
    name, where a DestinationRule with a workloadSelector picks the proxy."""
    found = build_selected_clusters(mesh, proxy.namespace, proxy.workload.labels)
    return [c for c in found if cluster_in_scope(mesh, proxy, c.name)]


def _name(cluster: cluster_pb2.Cluster) -> str:
    return str(cluster.name)
