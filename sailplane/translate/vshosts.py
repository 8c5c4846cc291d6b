"""Virtual hosts of a sidecar for VirtualService hosts that no service has.

Istio's sidecar (pilot/pkg/networking/core/route/route.go,
``separateVSHostsAndServices`` and ``BuildSidecarOutboundVirtualHosts``)
gives a mesh-bound VirtualService host that matches no service of the
registry (``bookinfo.com``; a wildcard that matches none) a virtual host of
its own on the HTTP route configuration, with the domains ``HOST`` and
``HOST:PORT``, and the VirtualService's routes. The destinations are
services, so the requests go somewhere real; only the name is virtual.

Our sidecar's one outbound route table stands for Istio's port-80 route
configuration (an app behind ``HTTP_PROXY`` sends ``Host: bookinfo.com``),
so the port is 80. A domain some service already claims is left out, and
of two VirtualServices naming the same host, the one Istio prefers wins
(see :func:`routes.mesh_virtual_service`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.sidecar import Sidecar
from sailplane.translate.routes import (
    exported_to,
    mesh_virtual_service,
    virtual_service_routes,
)

HTTP_PORT = 80


def virtual_service_host_vhosts(
    mesh: MeshConfig,
    namespace: str,
    labels: Mapping[str, str],
    sidecar: Sidecar | None,
    claimed: Collection[str],
) -> Iterator[rc.VirtualHost]:
    """One virtual host per VirtualService-only host, in host order."""
    taken = set(claimed)
    hosts = dict.fromkeys(
        host
        for host, vs in mesh.hosts_without_service
        if exported_to(vs.export_to, vs.namespace, namespace)
    )
    for host in hosts:
        vs = mesh_virtual_service(mesh, host, namespace)
        if vs is None or (sidecar is not None and not sidecar.allows(vs.namespace, host)):
            continue
        domains = [d for d in (host, f"{host}:{HTTP_PORT}") if d not in taken]
        routes = virtual_service_routes(mesh, vs, HTTP_PORT, labels, namespace)
        if not domains or not routes:
            continue
        taken.update(domains)
        yield rc.VirtualHost(name=f"{host}:{HTTP_PORT}", domains=domains, routes=routes)


def add_virtual_service_hosts(
    config: route_pb2.RouteConfiguration,
    mesh: MeshConfig,
    namespace: str,
    labels: Mapping[str, str],
    sidecar: Sidecar | None,
) -> route_pb2.RouteConfiguration:
    """The outbound route table (routes.build_outbound_route_config) with
    these virtual hosts before the catch-all, its last virtual host, as
    server/routetables.py assembles it."""
    claimed = {domain for vhost in config.virtual_hosts for domain in vhost.domains}
    extra = list(virtual_service_host_vhosts(mesh, namespace, labels, sidecar, claimed))
    if extra:
        catch_all = config.virtual_hosts.pop()
        config.virtual_hosts.extend([*extra, catch_all])
    return config
