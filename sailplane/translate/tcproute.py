"""VirtualService ``tcp`` and ``tls`` routes at a transparent sidecar.

As Istio builds the filter chains of an outbound TCP or TLS service port
(pilot/pkg/networking/core/tls.go, buildSidecarOutboundTCPFilterChainOpts
and buildSidecarOutboundTLSFilterChainOpts), per service of the port:

* TCP: the rules of the VirtualServices bound to the mesh for the service's
  host, in order; a rule whose match applies to this proxy (port,
  ``sourceLabels``, ``gateways``) without ``destinationSubnets`` is the
  terminal one, a match with subnets gives a chain of its own matching
  those; without a terminal rule, a chain to the service's own cluster.
* TLS: a chain per applicable match (its ``sniHosts`` and, if given, its
  ``destinationSubnets``), a runtime match already taken being skipped;
  without any, a chain to the service's cluster matching the service's
  host as SNI where the destination address cannot tell services apart.

The chains come out as :class:`L4Chain` (what to match, where to send);
transparent_outbound.py turns them into a listener's filter chains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailplane.model.hosts import host_matches
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import Destination, VirtualService
from sailplane.model.registry import (
    Protocol,
    Resolution,
    Service,
    ServicePort,
    selector_matches,
)
from sailplane.model.sidecar import Sidecar
from sailplane.translate import names
from sailplane.translate.egress import PASSTHROUGH_CLUSTER
from sailplane.translate.httproute import RouteContext
from sailplane.translate.routes import exported_to, route_context
from sailplane.translate.tlsroute import tcp_proxy_to

# Service port protocols Istio routes by SNI on the sidecar.
TLS_PROTOCOLS = (Protocol.TLS, Protocol.HTTPS)


@dataclass(frozen=True, slots=True)
class L4Chain:
    """One outbound filter chain: destination CIDRs and SNI names to match
    (empty: any), and the tcp_proxy it ends in."""

    cidrs: tuple[str, ...]
    sni: tuple[str, ...]
    tcp: tcp_proxy_pb2.TcpProxy
    source: str  # what made it: "VirtualService ns/name" or the service's host

    @property
    def runtime_match(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What Envoy matches on; two chains of a port may not share it."""
        return (tuple(sorted(self.cidrs)), tuple(sorted(s for s in self.sni if s != "*")))


def mesh_virtual_services(
    mesh: MeshConfig, hostname: str, namespace: str, sidecar: Sidecar | None
) -> list[VirtualService]:
    """Istio's getConfigsForHost over the sidecar's VirtualServices: those
    bound to the mesh, exported to the proxy's namespace (and in its
    Sidecar's scope) whose hosts cover ``hostname``, in configuration order."""
    return [
        vs
        for vs in mesh.virtual_services
        if "mesh" in vs.gateways
        and sidecar_visible(vs, namespace, sidecar)
        and any(host_matches(h, hostname) for h in vs.hosts)
    ]


def sidecar_visible(vs: VirtualService, namespace: str, sidecar: Sidecar | None) -> bool:
    """Whether a sidecar of ``namespace`` under ``sidecar`` may see ``vs``:
    exported to the namespace and in the Sidecar's scope (the gateways
    are the caller's: per match, see :func:`match_applies`)."""
    return exported_to(vs.export_to, vs.namespace, namespace) and (
        sidecar is None or any(sidecar.allows(vs.namespace, h) for h in vs.hosts)
    )


def match_applies(
    port: int | None,
    labels: Mapping[str, str],
    gateways: tuple[str, ...],
    source_labels: Mapping[str, str],
    listener_port: int | None = None,
) -> bool:
    """Istio's matchTCP / matchTLS: the static part of a match (its port
    only where ``listener_port`` is given)."""
    if gateways and "mesh" not in gateways:
        return False
    if source_labels and not selector_matches(source_labels, labels):
        return False
    return port is None or listener_port is None or port == listener_port


def l4_context(mesh: MeshConfig, port: int) -> RouteContext:
    """The route context of a port, where a wildcard destination (a
    ServiceEntry host such as ``*.example.com``) goes to its original
    destination, as Istio's sidecar sends it."""
    base = route_context(mesh, port)

    def cluster_for(dest: Destination) -> str:
        return PASSTHROUGH_CLUSTER if "*" in dest.host else base.cluster_for(dest)

    return RouteContext(cluster_for, base.hash_policy_for)


def _default_cluster(mesh: MeshConfig, service: Service, port: ServicePort) -> str:
    """As Istio: the listener's port, or the service's only port. A wildcard
    host, or resolution NONE without endpoints, has nothing to balance over:
    the original destination (Istio's ORIGINAL_DST cluster for it)."""
    number = service.ports[0].number if len(service.ports) == 1 else port.number
    if "*" in service.hostname or (
        service.resolution is Resolution.NONE and not mesh.endpoints_of(service)
    ):
        return PASSTHROUGH_CLUSTER
    return names.outbound_cluster_name(number, service.hostname)


def tcp_chains(
    mesh: MeshConfig,
    service: Service,
    port: ServicePort,
    cidrs: tuple[str, ...],
    labels: Mapping[str, str],
    namespace: str,
    sidecar: Sidecar | None,
) -> list[L4Chain]:
    """The TCP chains of one service on its ``port`` (``cidrs``: the
    destination addresses known for it, empty when none)."""
    ctx = l4_context(mesh, port.number)
    out: list[L4Chain] = []
    for vs in mesh_virtual_services(mesh, service.hostname, namespace, sidecar):
        for index, rule in enumerate(vs.tcp):
            label = f"VirtualService {vs.namespace}/{vs.name} tcp[{index}]"
            tcp = tcp_proxy_to(ctx, rule.route)
            if tcp is None:
                continue
            if not rule.match:
                return [*out, L4Chain(cidrs, (), tcp, label)]
            subnets: list[str] = []
            for match in rule.match:
                if not match_applies(
                    match.port, labels, match.gateways, match.source_labels, port.number
                ):
                    continue
                if not match.destination_subnets:
                    return [*out, L4Chain(cidrs, (), tcp, label)]
                subnets.extend(match.destination_subnets)
            if subnets:
                out.append(L4Chain(tuple(subnets), (), tcp, label))
                if sorted(subnets) == sorted(cidrs):
                    return out  # the service's own chain would match the same
    cluster = _default_cluster(mesh, service, port)
    tcp = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    return [*out, L4Chain(cidrs, (), tcp, service.hostname)]


def tls_chains(
    mesh: MeshConfig,
    service: Service,
    port: ServicePort,
    cidrs: tuple[str, ...],
    labels: Mapping[str, str],
    namespace: str,
    sidecar: Sidecar | None,
) -> list[L4Chain]:
    """The TLS chains of one service on its ``port``: by SNI, see the module."""
    ctx = l4_context(mesh, port.number)
    out: list[L4Chain] = []
    handled: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for vs in mesh_virtual_services(mesh, service.hostname, namespace, sidecar):
        for index, rule in enumerate(vs.tls):
            tcp = tcp_proxy_to(ctx, rule.route)
            if tcp is None:
                continue
            for number, match in enumerate(rule.match):
                if not match_applies(
                    match.port, labels, match.gateways, match.source_labels, port.number
                ):
                    continue
                chain = L4Chain(
                    tuple(match.destination_subnets) or cidrs,
                    match.sni_hosts,
                    tcp,
                    f"VirtualService {vs.namespace}/{vs.name} tls[{index}].match[{number}]",
                )
                key = (tuple(sorted(match.sni_hosts)), tuple(sorted(match.destination_subnets)))
                if key not in handled:
                    handled.add(key)
                    out.append(chain)
    if out:
        return out
    cluster = _default_cluster(mesh, service, port)
    # Without known addresses the SNI is all that tells services apart
    # (Istio: a 0.0.0.0 listener matches the host as SNI).
    sni = () if cidrs else (service.hostname,)
    tcp = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    return [L4Chain(cidrs, sni, tcp, service.hostname)]
