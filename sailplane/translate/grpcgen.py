"""Proxyless gRPC clients (Istio's pilot/pkg/networking/grpcgen): what
gRPC's own xDS client reads, for a node whose metadata says ``GENERATOR:
grpc`` (see :attr:`~sailplane.translate.proxy.Proxy.proxyless`).

gRPC asks LDS for the target of an ``xds:///`` URI, exactly as written:
``echo:50051``, ``echo.default:50051`` or the FQDN. Each gets an API
listener (gRFC A27) of that name whose HTTP connection manager fetches, over
RDS, the route configuration of that one service port, named as Istio's
grpcgen names it (its cluster key, ``outbound|50051||echo.default.svc...``),
with only the filters gRPC implements (A39: fault, A33, when a route
injects one; the router last), since gRPC NACKs a listener with any other.

The routes are the sidecar's own for that virtual host (routes.py, A28:
path and header matches, weighted clusters), adapted to what gRPC reads: a
route's timeout is its ``max_stream_duration`` as well (A31; gRPC ignores
``timeout``), and per-route configs other than fault's are left out (gRPC
NACKs a config of a filter type it does not know). Retry policies stay as
Envoy gets them: gRPC reads their gRPC status names and ``num_retries``
(A44) and ignores the rest. Clusters and endpoints are the mesh's shared
ones (CDS and EDS are read by name).
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from sailplane.model.hosts import host_aliases
from sailplane.model.mesh import MeshConfig
from sailplane.translate import names
from sailplane.translate.common import ads_config_source, pack
from sailplane.translate.httproute import FAULT_FILTER
from sailplane.translate.proxy import Proxy
from sailplane.translate.routes import (
    PlannedVirtualHost,
    build_outbound_virtual_host,
    plan_outbound_virtual_hosts,
)

ROUTER_FILTER = "envoy.filters.http.router"


@dataclass(frozen=True, slots=True)
class GrpcResources:
    """A proxyless client's own listeners and route configurations, sorted by name."""

    listeners: tuple[listener_pb2.Listener, ...]
    routes: tuple[route_pb2.RouteConfiguration, ...]


def route_config_name(planned: PlannedVirtualHost) -> str:
    """Istio's grpcgen names a route configuration by its cluster key
    (``clusterKey(host, port)``), so the client subscribes to one per target."""
    return names.outbound_cluster_name(planned.port.number, planned.service.hostname)


def listener_hosts(planned: PlannedVirtualHost, client_namespace: str, suffix: str) -> list[str]:
    """The names a client may use in ``xds:///NAME:PORT``: the FQDN, and for
    a service of its own namespace ``name``, ``name.ns`` and ``name.ns.svc``
    (Istio's tryFindFQDN expands only those)."""
    hostname = planned.service.hostname
    if planned.service.namespace != client_namespace:
        return [hostname]
    return host_aliases(hostname, client_namespace, suffix)


def build_grpc_resources(mesh: MeshConfig, proxy: Proxy) -> GrpcResources:
    """Pure: an API listener per ``host:port`` the client may name, and the
    route configuration each points at."""
    sidecar = mesh.sidecar_for(proxy.workload)
    listeners: list[listener_pb2.Listener] = []
    routes: list[route_pb2.RouteConfiguration] = []
    for planned in plan_outbound_virtual_hosts(mesh, proxy.namespace, sidecar):
        vhost = build_outbound_virtual_host(mesh, planned, proxy.namespace, proxy.workload.labels)
        config = build_grpc_route_config(route_config_name(planned), vhost)
        routes.append(config)
        hcm = build_api_listener_hcm(config)
        for host in listener_hosts(planned, proxy.namespace, mesh.domain_suffix):
            listeners.append(
                listener_pb2.Listener(
                    name=f"{host}:{planned.port.number}",
                    api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)),
                )
            )
    return GrpcResources(
        listeners=tuple(sorted(listeners, key=lambda x: x.name)),
        routes=tuple(sorted(routes, key=lambda r: r.name)),
    )


def build_grpc_route_config(name: str, vhost: rc.VirtualHost) -> route_pb2.RouteConfiguration:
    """One service port's routes, as gRPC reads them (see the module docstring)."""
    out = rc.VirtualHost(name=vhost.name, domains=vhost.domains)
    out.routes.extend(grpc_route(route) for route in vhost.routes)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[out])


def grpc_route(route: rc.Route) -> rc.Route:
    out = rc.Route()
    out.CopyFrom(route)
    for filter_name in list(out.typed_per_filter_config):
        if filter_name != FAULT_FILTER:
            del out.typed_per_filter_config[filter_name]
    if out.HasField("route"):
        # Istio (route.go, IsProxylessGrpc): max_stream_duration = timeout,
        # 0 for none; gRPC honours the shorter of it and the call's deadline.
        out.route.max_stream_duration.max_stream_duration.CopyFrom(out.route.timeout)
    return out


def build_api_listener_hcm(
    config: route_pb2.RouteConfiguration,
) -> hcm_pb2.HttpConnectionManager:
    """RDS for ``config`` by name; the fault filter only if a route injects one."""
    faults = any(
        FAULT_FILTER in route.typed_per_filter_config
        for vhost in config.virtual_hosts
        for route in vhost.routes
    )
    filters = []
    if faults:
        filters.append(
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault()))
        )
    filters.append(hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())))
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=config.name,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=config.name),
        http_filters=filters,
    )
