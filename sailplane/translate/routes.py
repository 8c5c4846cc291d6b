"""Route configurations: the sidecar's outbound route table, and the route
configuration of each inbound HTTP port (see :func:`build_inbound_route_config`).

One virtual host per service port, named ``FQDN:PORT`` as in Istio, listing
every name a client in the proxy's namespace may use (short name,
``name.ns``, ``name.ns.svc``, FQDN), each with ``:port``, and without a port
for the service's default port (80 if it has one, else its first port).

Its routes come from the VirtualService bound to the mesh for that host, if
any (first match wins, in order), else one default route to the service.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.hosts import host_aliases, host_matches
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import Destination, HTTPMatch, VirtualService
from sailplane.model.registry import Protocol, Service, ServicePort, selector_matches
from sailplane.model.sidecar import Sidecar
from sailplane.translate import names
from sailplane.translate.authz import http_rbac_per_route
from sailplane.translate.common import duration
from sailplane.translate.egress import catch_all_virtual_host
from sailplane.translate.httproute import RouteContext, build_http_routes, build_retry_policy


def default_port(service: Service) -> ServicePort:
    for port in service.ports:
        if port.number == 80:
            return port
    return service.ports[0]


def routes_to_cluster(cluster: str, outbound: bool = False) -> list[rc.Route]:
    """One catch-all route. As Istio: no route timeout (Envoy's default is
    15 s), and outbound routes carry Istio's default retry policy."""
    action = rc.RouteAction(cluster=cluster, timeout=duration(0))
    if outbound:
        retry = build_retry_policy(None)
        assert retry is not None
        action.retry_policy.CopyFrom(retry)
    return [rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)]


def build_inbound_route_config(
    workload_port: int, policies: list[AuthorizationPolicy], mtls_mode: str = "PERMISSIVE"
) -> route_pb2.RouteConfiguration:
    """One inbound HTTP port's routes, over RDS: everything to the app, with
    the port's AuthorizationPolicies (and STRICT mTLS) as per-route RBAC.
    Over RDS because Envoy applies a route update to the next request of
    every open connection, the draining ones included (they share the route
    configuration by name), so a policy bites at once; see authz.py."""
    vhost = rc.VirtualHost(
        name=f"inbound|http|{workload_port}",
        domains=["*"],
        routes=routes_to_cluster(names.inbound_cluster_name(workload_port)),
    )
    add_per_route_rbac(vhost, http_rbac_per_route(policies, mtls_mode == "STRICT"))
    return route_pb2.RouteConfiguration(
        name=names.inbound_route_name(workload_port),
        virtual_hosts=[vhost],
        validate_clusters={"value": False},
    )


def add_per_route_rbac(vhost: rc.VirtualHost, rbac: Mapping[str, any_pb2.Any]) -> None:
    """Per virtual host, not per RouteConfiguration: an Envoy older than that
    field would ignore it, and silently enforce nothing."""
    for filter_name, config in rbac.items():
        vhost.typed_per_filter_config[filter_name].CopyFrom(config)


def exported_to(export_to: tuple[str, ...], owner_namespace: str, namespace: str) -> bool:
    """Istio ``exportTo``: ``*`` everyone, ``.`` the owner's namespace, or names."""
    return any(
        e == "*" or e == namespace or (e == "." and owner_namespace == namespace) for e in export_to
    )


def mesh_virtual_service(mesh: MeshConfig, hostname: str, namespace: str) -> VirtualService | None:
    """The VirtualService routing ``hostname`` for sidecars in ``namespace``:
    an exact host first, then the most specific wildcard; VirtualServices in
    the client's namespace win over others (Istio's lookup order)."""
    best: tuple[int, int, VirtualService] | None = None
    for vs in mesh.virtual_services_for_host(hostname):
        if "mesh" not in vs.gateways or not exported_to(vs.export_to, vs.namespace, namespace):
            continue
        for host in vs.hosts:
            if not host_matches(host, hostname):
                continue
            rank = (0 if host == hostname else 1, len(host) * -1)
            score = (rank[0] * 2 + (0 if vs.namespace == namespace else 1), rank[1])
            if best is None or score < best[:2]:
                best = (score[0], score[1], vs)
    return best[2] if best else None


def applicable_matches(
    matches: tuple[HTTPMatch, ...],
    port: int | None,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str = "mesh",
) -> list[HTTPMatch | None]:
    """The matches of a route that can apply to this proxy and port; ``[None]``
    for a route without matches (it matches everything)."""
    if not matches:
        return [None]
    out: list[HTTPMatch | None] = []
    for match in matches:
        if match.port is not None and port is not None and match.port != port:
            continue
        if match.source_labels and not selector_matches(match.source_labels, labels):
            continue
        if match.source_namespace and match.source_namespace != namespace:
            continue
        if match.gateways and gateway not in match.gateways:
            continue
        out.append(match)
    return out


def route_context(mesh: MeshConfig, vhost_port: int | None) -> RouteContext:
    def port_of(dest: Destination) -> int:
        service = mesh.services_by_host.get(dest.host)
        if dest.port is not None or service is None:
            return dest.port or vhost_port or 80
        numbers = [p.number for p in service.ports]
        if vhost_port is not None and vhost_port in numbers:
            return vhost_port
        return numbers[0]

    def cluster_for(dest: Destination) -> str:
        return names.outbound_cluster_name(port_of(dest), dest.host, dest.subset)

    def hash_policy_for(dest: Destination) -> list[rc.RouteAction.HashPolicy]:
        rule = mesh.destination_rule_for(dest.host)
        if rule is None:
            return []
        lb = rule.policy(port_of(dest), dest.subset).load_balancer
        chash = lb.consistent_hash if lb else None
        if chash is None:
            return []
        policy = rc.RouteAction.HashPolicy()
        if chash.header:
            policy.header.header_name = chash.header
        elif chash.cookie:
            policy.cookie.name = chash.cookie
            policy.cookie.path = chash.cookie_path
            if chash.cookie_ttl is not None:
                policy.cookie.ttl.FromNanoseconds(round(chash.cookie_ttl * 1e9))
        elif chash.source_ip:
            policy.connection_properties.source_ip = True
        elif chash.query_parameter:
            policy.query_parameter.name = chash.query_parameter
        return [policy]

    return RouteContext(cluster_for, hash_policy_for)


def virtual_service_routes(
    mesh: MeshConfig,
    vs: VirtualService,
    port: int | None,
    labels: Mapping[str, str],
    namespace: str,
    gateway: str = "mesh",
) -> list[rc.Route]:
    ctx = route_context(mesh, port)
    routes: list[rc.Route] = []
    for index, http in enumerate(vs.http):
        matches = applicable_matches(http.match, port, labels, namespace, gateway)
        if matches:
            routes.extend(build_http_routes(http, matches, ctx, f"{vs.key}.{index}"))
    return routes


@dataclass(frozen=True, slots=True)
class PlannedVirtualHost:
    """One virtual host of a sidecar's outbound route table, before its routes."""

    service: Service
    port: ServicePort
    name: str
    domains: tuple[str, ...]


@functools.lru_cache(maxsize=65536)
def _aliases(hostname: str, client_namespace: str, domain_suffix: str) -> tuple[str, ...]:
    return tuple(host_aliases(hostname, client_namespace, domain_suffix))


def plan_outbound_virtual_hosts(
    mesh: MeshConfig, client_namespace: str, sidecar: Sidecar | None = None
) -> list[PlannedVirtualHost]:
    """The virtual hosts of the outbound route table, in name order: every
    service port the client may see (``exportTo`` and its Sidecar's
    ``egress.hosts``), each with the names a client in ``client_namespace``
    may use. A domain already claimed by an earlier service (hostname order)
    is left out, so Envoy never sees a duplicate."""
    claimed: set[str] = set()
    planned = []
    for service, port in http_services(mesh):
        if not exported_to(service.export_to, service.namespace, client_namespace):
            continue
        if sidecar is not None and not sidecar.allows(service.namespace, service.hostname):
            continue
        aliases = _aliases(service.hostname, client_namespace, mesh.domain_suffix)
        domains = [f"{alias}:{port.number}" for alias in aliases]
        if port is default_port(service):
            domains.extend(aliases)
        domains = [d for d in domains if d not in claimed]
        if not domains:
            continue
        claimed.update(domains)
        name = names.virtual_host_name(service.hostname, port.number)
        planned.append(PlannedVirtualHost(service, port, name, tuple(domains)))
    planned.sort(key=lambda p: p.name)
    return planned


def build_outbound_virtual_host(
    mesh: MeshConfig,
    planned: PlannedVirtualHost,
    client_namespace: str,
    client_labels: Mapping[str, str] | None = None,
) -> rc.VirtualHost:
    """The routes of one planned virtual host: its VirtualService's, or one
    default route to the service."""
    service, port = planned.service, planned.port
    vs = mesh_virtual_service(mesh, service.hostname, client_namespace)
    if vs is not None:
        routes = virtual_service_routes(
            mesh, vs, port.number, client_labels or {}, client_namespace
        )
    else:
        cluster = names.outbound_cluster_name(port.number, service.hostname)
        routes = routes_to_cluster(cluster, outbound=True)
    return rc.VirtualHost(name=planned.name, domains=planned.domains, routes=routes)


def http_services(mesh: MeshConfig) -> list[tuple[Service, ServicePort]]:
    """Service ports routed by the HTTP outbound listener. Ports of unknown
    protocol are treated as HTTP (Istio would sniff; our capture is an HTTP
    proxy, so only HTTP reaches it)."""
    return [
        (service, port)
        for service in mesh.services
        for port in service.ports
        if (port.protocol.is_http or port.protocol is Protocol.UNKNOWN)
        and "*" not in service.hostname
    ]


def outbound_route_shell() -> route_pb2.RouteConfiguration:
    """The outbound route table without its virtual hosts."""
    return route_pb2.RouteConfiguration(
        name=names.OUTBOUND_ROUTE_NAME,
        # As Istio: a route to a cluster that is not there yet answers 503
        # instead of the whole route table being rejected.
        validate_clusters={"value": False},
    )


def build_outbound_route_config(
    mesh: MeshConfig,
    client_namespace: str,
    client_labels: Mapping[str, str] | None = None,
    sidecar: Sidecar | None = None,
    outbound_mode: str = "ALLOW_ANY",
) -> route_pb2.RouteConfiguration:
    """Every planned virtual host (see :func:`plan_outbound_virtual_hosts`),
    then the catch-all of the outbound traffic policy (see egress.py)."""
    config = outbound_route_shell()
    config.virtual_hosts.extend(
        build_outbound_virtual_host(mesh, planned, client_namespace, client_labels)
        for planned in plan_outbound_virtual_hosts(mesh, client_namespace, sidecar)
    )
    config.virtual_hosts.append(catch_all_virtual_host(outbound_mode))
    return config


def route_signature(mesh: MeshConfig, labels: Mapping[str, str]) -> tuple[bool, ...]:
    """Which ``sourceLabels`` selectors of the mesh match these labels: proxies
    with the same signature (and namespace) share one route table."""
    return tuple(selector_matches(dict(s), labels) for s in mesh.source_label_selectors)
