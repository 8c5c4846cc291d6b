"""The translation entry point: mesh + proxy -> Envoy resources.

Work that does not depend on the proxy (outbound clusters and endpoints) is
built once per mesh (:func:`build_mesh_wide`) and reused for every proxy;
per-namespace work (route names by short host) once per namespace; only the
proxy's own listeners are per proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.telemetry import telemetry_for
from sailplane.translate.authz import policies_for
from sailplane.translate.clusters import build_inbound_cluster, build_outbound_clusters
from sailplane.translate.endpoints import build_endpoints
from sailplane.translate.gateway import build_gateway_listeners, build_gateway_routes
from sailplane.translate.listeners import (
    build_inbound_listener,
    build_outbound_listener,
    inbound_ports,
)
from sailplane.translate.proxy import Proxy, Role
from sailplane.translate.routes import build_outbound_route_config, route_signature
from sailplane.translate.telemetry import tracing_clusters


@dataclass(frozen=True, slots=True)
class MeshWide:
    """Resources every sidecar of the mesh shares."""

    clusters: tuple[cluster_pb2.Cluster, ...]
    endpoints: tuple[endpoint_pb2.ClusterLoadAssignment, ...]


@dataclass(frozen=True, slots=True)
class ProxyResources:
    """Everything one proxy is sent, by resource kind, each sorted by name.

    ``shared_*`` hold the same tuple objects for every proxy built from the same
    :class:`MeshWide`, so the xDS layer can encode them once.
    """

    shared_clusters: tuple[cluster_pb2.Cluster, ...]
    own_clusters: tuple[cluster_pb2.Cluster, ...]
    endpoints: tuple[endpoint_pb2.ClusterLoadAssignment, ...]
    listeners: tuple[listener_pb2.Listener, ...]
    routes: tuple[route_pb2.RouteConfiguration, ...]
    secrets: tuple[secret_pb2.Secret, ...] = ()

    @property
    def clusters(self) -> tuple[cluster_pb2.Cluster, ...]:
        return tuple(sorted((*self.shared_clusters, *self.own_clusters), key=lambda c: c.name))


def build_mesh_wide(mesh: MeshConfig) -> MeshWide:
    return MeshWide(tuple(build_outbound_clusters(mesh)), tuple(build_endpoints(mesh)))


def build_routes(mesh: MeshConfig, proxy: Proxy) -> tuple[route_pb2.RouteConfiguration, ...]:
    if proxy.role is Role.GATEWAY:
        return build_gateway_routes(mesh, proxy)
    return (
        build_outbound_route_config(
            mesh,
            proxy.namespace,
            proxy.outbound_address[1],
            proxy.workload.labels,
            mesh.sidecar_for(proxy.workload),
            mesh.outbound_mode(proxy.workload),
        ),
    )


def routes_key(mesh: MeshConfig, proxy: Proxy) -> tuple[object, ...]:
    """Proxies with equal keys get identical route tables (shared, encoded once)."""
    if proxy.role is Role.GATEWAY:
        return ("gateway", proxy.id)
    signature = route_signature(mesh, proxy.workload.labels)
    return (
        "sidecar",
        proxy.namespace,
        proxy.outbound_address[1],
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


def build_proxy_resources(
    mesh: MeshConfig,
    proxy: Proxy,
    mesh_wide: MeshWide | None = None,
    routes: tuple[route_pb2.RouteConfiguration, ...] | None = None,
) -> ProxyResources:
    """Pure: the same mesh and proxy always give the same resources."""
    shared = mesh_wide or build_mesh_wide(mesh)
    telemetry = telemetry_for(mesh, proxy.workload)
    if proxy.role is Role.GATEWAY:
        return ProxyResources(
            shared_clusters=shared.clusters,
            own_clusters=tuple(tracing_clusters(telemetry)),
            endpoints=shared.endpoints,
            listeners=tuple(build_gateway_listeners(mesh, proxy)),
            routes=routes if routes is not None else build_routes(mesh, proxy),
        )
    ports = inbound_ports(proxy, mesh)
    policies = policies_for(mesh, proxy.workload)
    listeners = [build_outbound_listener(proxy, telemetry)]
    listeners.extend(
        build_inbound_listener(
            proxy,
            port,
            protocol,
            mesh.mtls_mode(proxy.workload, port),
            mesh.trust_domain,
            policies,
            telemetry,
        )
        for port, protocol in ports.items()
    )
    own_clusters = tuple(
        sorted(
            (
                *(
                    build_inbound_cluster(port, proxy.app_address, protocol)
                    for port, protocol in ports.items()
                ),
                *tracing_clusters(telemetry),
            ),
            key=lambda c: c.name,
        )
    )
    return ProxyResources(
        shared_clusters=shared.clusters,
        own_clusters=own_clusters,
        endpoints=shared.endpoints,
        listeners=tuple(sorted(listeners, key=lambda x: x.name)),
        routes=routes if routes is not None else build_routes(mesh, proxy),
    )
