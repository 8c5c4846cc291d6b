"""SNI-routed TCP at gateways: ``PASSTHROUGH`` and ``AUTO_PASSTHROUGH`` servers.

As Istio builds them (pilot/pkg/networking/core/gateway.go):

* PASSTHROUGH (buildGatewayNetworkFiltersFromTLSRoutes): for each
  VirtualService bound to the gateway whose hosts meet the server's, each
  ``tls`` rule with a route, each match whose port and gateways fit the
  server: a filter chain matching the match's ``sniHosts``, with a
  ``tcp_proxy`` to the rule's (weighted) destinations. The TLS stream is
  forwarded as is; a second rule for an SNI already taken on the port is
  skipped (Envoy rejects two chains with the same match).
* AUTO_PASSTHROUGH (builtAutoPassthroughFilterChains): for each mesh
  service the server's hosts cover, each port (and DestinationRule subset):
  a chain matching the SNI ``outbound_.PORT_.SUBSET_.HOST`` that Istio's
  sidecars send, and the Istio mTLS ALPNs, to an "SNI-DNAT" cluster of that
  name: the service's cluster without TLS settings (buildOutboundSniDnatClusters),
  since the caller's mTLS passes through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailplane.model.hosts import host_matches
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import (
    DestinationRule,
    Gateway,
    GatewayServer,
    RouteDestination,
    VirtualService,
)
from sailplane.model.registry import Location, Service, ServicePort, subset_endpoints
from sailplane.translate import names
from sailplane.translate.clusters import build_outbound_cluster
from sailplane.translate.common import TCP_PROXY
from sailplane.translate.httproute import RouteContext
from sailplane.translate.listeners import network_filter
from sailplane.translate.mtls import ISTIO_MTLS_ALPNS, istio_sni
from sailplane.translate.routes import route_context


def is_passthrough(server: GatewayServer) -> bool:
    return server.tls is not None and server.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")


def tcp_proxy_to(
    ctx: RouteContext, targets: Sequence[RouteDestination]
) -> tcp_proxy_pb2.TcpProxy | None:
    """A tcp_proxy to one destination, or weighted clusters (Istio's TCPRoute /
    TLSRoute with several destinations); destinations of weight 0 get nothing."""
    chosen = [t for t in targets if t.weight > 0] or list(targets)
    if not chosen:
        return None
    first = ctx.cluster_for(chosen[0].destination)
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=first)
    if len(chosen) == 1:
        proxy.cluster = first
        return proxy
    for target in chosen:
        proxy.weighted_clusters.clusters.append(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(
                name=ctx.cluster_for(target.destination), weight=target.weight
            )
        )
    return proxy


def intersect(vs_host: str, server_host: str) -> str | None:
    """The narrower of a VirtualService host and a server host when one
    covers the other, else None."""
    if host_matches(server_host, vs_host):
        return vs_host
    if host_matches(vs_host, server_host):
        return server_host
    return None


def bound(mesh: MeshConfig, gateway: Gateway) -> list[VirtualService]:
    """The VirtualServices bound to the gateway (``gateways: [name]``)."""
    return [vs for vs in mesh.virtual_services if gateway.key in vs.gateways]


def server_hosts_meet(server: GatewayServer, vs: VirtualService) -> bool:
    """Istio's pickMatchingGatewayHosts: a server host (in the VirtualService's
    namespace, or any) matches one of the VirtualService's hosts."""
    return any(
        namespace in ("*", vs.namespace) and intersect(vs_host, host) is not None
        for namespace, host in server.hosts
        for vs_host in vs.hosts
    )


def passthrough_chains(
    mesh: MeshConfig, gateway: Gateway, server: GatewayServer, taken: set[str]
) -> list[tuple[listener_components_pb2.FilterChain, tcp_proxy_pb2.TcpProxy]]:
    """The server's SNI filter chains (each with its tcp_proxy, for the caller
    to decorate). ``taken``: the SNI names already matched on this port."""
    assert server.tls is not None
    if server.tls.mode == "AUTO_PASSTHROUGH":
        return _auto_passthrough_chains(mesh, server, taken)
    ctx = route_context(mesh, server.port)
    out = []
    for vs in bound(mesh, gateway):
        if not server_hosts_meet(server, vs):
            continue
        for rule in vs.tls:
            if not rule.route:
                continue
            for match in rule.match:
                if match.port not in (None, server.port):
                    continue
                if match.gateways and gateway.key not in match.gateways:
                    continue
                sni = [h for h in match.sni_hosts if h != "*"]
                if any(h in taken for h in sni) or (not sni and "" in taken):
                    continue  # Istio: "duplicate SNI host names", skipped
                proxy = tcp_proxy_to(ctx, rule.route)
                if proxy is None:
                    continue
                taken.update(sni or [""])
                chain = listener_components_pb2.FilterChain(
                    filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=sni)
                )
                out.append((chain, proxy))
    return out


class _AutoTarget(NamedTuple):
    sni: str
    service: Service
    port: ServicePort
    subset: str
    rule: DestinationRule | None


def _auto_targets(mesh: MeshConfig, server: GatewayServer) -> list[_AutoTarget]:
    """(SNI, service, port, subset, DestinationRule) for every mesh service port
    the server's hosts cover, without and with each DestinationRule subset."""
    out = []
    for service in mesh.services:
        if service.location is Location.MESH_EXTERNAL or "*" in service.hostname:
            continue
        if not any(
            namespace in ("*", service.namespace) and host_matches(host, service.hostname)
            for namespace, host in server.hosts
        ):
            continue
        rule = mesh.destination_rule_for(service.hostname)
        subsets = [""] + [s.name for s in (rule.subsets if rule else ())]
        for port in service.ports:
            for subset in subsets:
                sni = istio_sni(port.number, subset, service.hostname)
                out.append(_AutoTarget(sni, service, port, subset, rule))
    return out


def _auto_passthrough_chains(
    mesh: MeshConfig, server: GatewayServer, taken: set[str]
) -> list[tuple[listener_components_pb2.FilterChain, tcp_proxy_pb2.TcpProxy]]:
    out = []
    for sni, *_ in _auto_targets(mesh, server):
        if sni in taken:
            continue
        taken.add(sni)
        chain = listener_components_pb2.FilterChain(
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                server_names=[sni], application_protocols=ISTIO_MTLS_ALPNS
            )
        )
        out.append((chain, tcp_proxy_pb2.TcpProxy(stat_prefix=sni, cluster=sni)))
    return out


def sni_dnat_clusters(
    mesh: MeshConfig, servers: Sequence[GatewayServer]
) -> list[cluster_pb2.Cluster]:
    """The clusters AUTO_PASSTHROUGH chains forward to: each named by its SNI,
    the service's outbound cluster without TLS (the caller's mTLS passes
    through), its endpoints from EDS under the outbound cluster's name."""
    out: dict[str, cluster_pb2.Cluster] = {}
    for server in servers:
        if server.tls is None or server.tls.mode != "AUTO_PASSTHROUGH":
            continue
        for sni, service, port, subset, rule in _auto_targets(mesh, server):
            if sni in out:
                continue
            endpoints = mesh.endpoints_of(service)
            chosen = rule.subset(subset) if rule and subset else None
            if chosen is not None:
                endpoints = subset_endpoints(endpoints, chosen.labels)
            cluster = build_outbound_cluster(service, port, endpoints, rule, subset, mesh=None)
            if cluster.type == cluster_pb2.Cluster.EDS:
                cluster.eds_cluster_config.service_name = names.outbound_cluster_name(
                    port.number, service.hostname, subset
                )
            else:
                cluster.load_assignment.cluster_name = sni
            cluster.name = sni
            cluster.ClearField("transport_socket")
            del cluster.transport_socket_matches[:]
            out[sni] = cluster
    return [out[name] for name in sorted(out)]


def tcp_filter(proxy: tcp_proxy_pb2.TcpProxy) -> listener_components_pb2.Filter:
    return network_filter(TCP_PROXY, proxy)
