"""VirtualService ``tls`` routes at sidecars, as CONNECT routing.

Istio's sidecar (pilot/pkg/networking/core/listener.go,
buildSidecarOutboundTLSFilterChainOpts in tls.go) puts a filter chain per
``tls`` match on the outbound listener of each TLS service port, matching
the ClientHello's SNI against ``sniHosts`` and tcp-proxying the stream,
untouched, to the rule's (weighted) destinations; a wildcard ServiceEntry
without endpoints goes to its original destination (an ORIGINAL_DST
cluster). Our sidecar is the app's HTTP proxy: an HTTPS client sends
``CONNECT host:port`` first, and ``host`` is the SNI it then sends. So each
match becomes a virtual host whose domains are its ``sniHosts`` with the
port, with one ``connect_matcher`` route that terminates the CONNECT and
forwards the raw bytes (the TLS) to the destinations; a wildcard
destination goes to a dynamic forward proxy of its own
(egress.connect_authority_cluster, in CDS only while some rule routes
to it: egress.tunnels_to_authority), which connects to the CONNECT
authority, which the domain has already confined to the rule's names and
port, in both capture modes: the route table is shared by both (one
routes_key), and a transparent sidecar's PassthroughCluster would tunnel
to the address the app dialled instead.

What no rule names gets no CONNECT route: the outbound table's other
routes match paths, which a CONNECT has none of, so Envoy answers 404. That
is narrower than Istio's ALLOW_ANY pass-through, deliberately: the sidecar
tunnels only where the configuration routes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from sailplane.model.hosts import host_matches
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import RouteDestination, TLSMatch, VirtualService
from sailplane.model.sidecar import Sidecar
from sailplane.translate.common import duration
from sailplane.translate.egress import CONNECT_AUTHORITY_CLUSTER, tunnel_targets
from sailplane.translate.httproute import RouteContext
from sailplane.translate.routes import route_context
from sailplane.translate.tcproute import TLS_PROTOCOLS, match_applies, sidecar_visible

DEFAULT_TLS_PORT = 443


def _ports(mesh: MeshConfig, vs: VirtualService, match: TLSMatch) -> list[int]:
    """The match's port, else (as Istio, which applies the rule on the
    listener of each TLS service port of the hosts) the TLS and HTTPS ports
    of the services the VirtualService names, else 443."""
    if match.port is not None:
        return [match.port]
    found = {
        port.number
        for service in mesh.services
        if any(host_matches(vs_host, service.hostname) for vs_host in vs.hosts)
        for port in service.ports
        if port.protocol in TLS_PROTOCOLS
    }
    return sorted(found) or [DEFAULT_TLS_PORT]


def _cluster(ctx: RouteContext, target: RouteDestination) -> str:
    if "*" in target.destination.host:
        # The CONNECT authority's own host (never the PassthroughCluster:
        # ORIGINAL_DST at a transparent sidecar, see egress.py).
        return CONNECT_AUTHORITY_CLUSTER
    return ctx.cluster_for(target.destination)


def connect_action(ctx: RouteContext, targets: Sequence[RouteDestination]) -> rc.RouteAction:
    """Terminate the CONNECT, then tunnel its bytes to one cluster or to
    weighted ones; destinations of weight 0 get nothing (as tlsroute.py)."""
    chosen = tunnel_targets(targets)
    action = rc.RouteAction(timeout=duration(0))
    if len(chosen) == 1:
        action.cluster = _cluster(ctx, chosen[0])
    else:
        for target in chosen:
            action.weighted_clusters.clusters.append(
                rc.WeightedCluster.ClusterWeight(
                    name=_cluster(ctx, target),
                    weight=wrappers_pb2.UInt32Value(value=target.weight or 100 // len(chosen)),
                )
            )
    action.upgrade_configs.append(
        rc.RouteAction.UpgradeConfig(
            upgrade_type="CONNECT", connect_config=rc.RouteAction.UpgradeConfig.ConnectConfig()
        )
    )
    return action


def connect_virtual_hosts(
    mesh: MeshConfig,
    client_namespace: str,
    client_labels: Mapping[str, str] | None = None,
    sidecar: Sidecar | None = None,
    claimed: Collection[str] = (),
) -> list[rc.VirtualHost]:
    """One virtual host per applicable ``tls`` match and port, in
    VirtualService order, its domains ``SNI:PORT``. A domain already taken (by an earlier match, as
    Istio skips a duplicate SNI, or in ``claimed``, the HTTP virtual hosts')
    is left out, so Envoy never sees a duplicate."""
    labels = client_labels or {}
    taken = set(claimed)
    out = []
    for vs in mesh.virtual_services:
        if not vs.tls or not sidecar_visible(vs, client_namespace, sidecar):
            continue
        for rule_index, rule in enumerate(vs.tls):
            if not rule.route:
                continue
            for match_index, match in enumerate(rule.match):
                gateways = match.gateways or vs.gateways
                if not match_applies(None, labels, gateways, match.source_labels):
                    continue
                for port in _ports(mesh, vs, match):
                    domains = [f"{sni}:{port}" for sni in match.sni_hosts]
                    domains = [d for d in domains if d not in taken]
                    if not domains:
                        continue
                    taken.update(domains)
                    name = f"connect|{vs.key}|{rule_index}|{match_index}|{port}"
                    route = rc.Route(
                        name=name,
                        match=rc.RouteMatch(connect_matcher=rc.RouteMatch.ConnectMatcher()),
                        route=connect_action(route_context(mesh, port), rule.route),
                    )
                    out.append(rc.VirtualHost(name=name, domains=domains, routes=[route]))
    return out


def add_tunnels(
    config: route_pb2.RouteConfiguration,
    mesh: MeshConfig,
    client_namespace: str,
    client_labels: Mapping[str, str] | None = None,
    sidecar: Sidecar | None = None,
) -> route_pb2.RouteConfiguration:
    """The outbound route table (routes.build_outbound_route_config) with its
    CONNECT virtual hosts before the catch-all, its last virtual host, as
    server/routetables.py assembles it."""
    claimed = {domain for vhost in config.virtual_hosts for domain in vhost.domains}
    tunnels = connect_virtual_hosts(mesh, client_namespace, client_labels, sidecar, claimed)
    if tunnels:
        catch_all = config.virtual_hosts.pop()
        config.virtual_hosts.extend([*tunnels, catch_all])
    return config
