"""Route configurations: Host-based routing on the outbound proxy listener.

Virtual hosts are named ``FQDN:PORT`` as in Istio; each lists every name a
client in the proxy's namespace may use (short name, ``name.ns``,
``name.ns.svc``, FQDN), each with ``:port``, and without a port for the
service's default port (80 if it has one, else its first port), which is what
a client sends when it omits the port.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2

from sailplane.model.hosts import host_aliases
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Service, ServicePort
from sailplane.translate import names


def default_port(service: Service) -> ServicePort:
    for port in service.ports:
        if port.number == 80:
            return port
    return service.ports[0]


def routes_to_cluster(cluster: str) -> list[route_components_pb2.Route]:
    return [
        route_components_pb2.Route(
            name="default",
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=cluster),
        )
    ]


def build_virtual_host(
    service: Service, port: ServicePort, aliases: list[str], claimed: set[str]
) -> route_components_pb2.VirtualHost | None:
    """The service port's virtual host; domains already claimed (by an earlier,
    more specific service) are left out so Envoy never sees a duplicate."""
    domains = [f"{alias}:{port.number}" for alias in aliases]
    if port is default_port(service):
        domains.extend(aliases)
    domains = [d for d in domains if d not in claimed]
    if not domains:
        return None
    claimed.update(domains)
    cluster = names.outbound_cluster_name(port.number, service.hostname)
    return route_components_pb2.VirtualHost(
        name=names.virtual_host_name(service.hostname, port.number),
        domains=domains,
        routes=routes_to_cluster(cluster),
    )


def http_services(mesh: MeshConfig) -> list[tuple[Service, ServicePort]]:
    """Service ports routed by the HTTP outbound listener. Ports of unknown
    protocol are treated as HTTP (Istio would sniff; our capture is an HTTP
    proxy, so only HTTP reaches it)."""
    return [
        (service, port)
        for service in mesh.services
        for port in service.ports
        if (port.protocol.is_http or port.protocol.name == "UNKNOWN")
        and "*" not in service.hostname
    ]


def build_outbound_route_config(
    mesh: MeshConfig, client_namespace: str, listener_port: int
) -> route_pb2.RouteConfiguration:
    claimed: set[str] = set()
    virtual_hosts = []
    for service, port in http_services(mesh):
        aliases = host_aliases(service.hostname, client_namespace, mesh.domain_suffix)
        vhost = build_virtual_host(service, port, aliases, claimed)
        if vhost is not None:
            virtual_hosts.append(vhost)
    return route_pb2.RouteConfiguration(
        name=names.outbound_route_name(listener_port),
        virtual_hosts=sorted(virtual_hosts, key=lambda v: v.name),
        # Istio sets this so a route naming a missing cluster fails fast with 503.
        validate_clusters={"value": False},
    )
