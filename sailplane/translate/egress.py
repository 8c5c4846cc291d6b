"""Traffic to hosts the registry does not know: Istio's outbound traffic policy.

ALLOW_ANY (the mesh default) passes such requests through; REGISTRY_ONLY
answers them from the BlackHoleCluster with 502 (istio.io, "Accessing
External Services"). With an iptables capture Istio passes through to the
original destination; our sidecar is an HTTP proxy, so the pass-through is
a dynamic forward proxy that resolves the Host the app asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import (
    dynamic_forward_proxy_pb2 as dfp_filter_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import RouteDestination
from sailplane.translate.common import duration, pack

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
CONNECT_AUTHORITY_CLUSTER = "ConnectAuthorityCluster"
# Istio's default MeshConfig.connectTimeout.
PASSTHROUGH_CONNECT_TIMEOUT_S = 10.0
DFP_FILTER = "envoy.filters.http.dynamic_forward_proxy"


def _dns_cache() -> dns_cache_pb2.DnsCacheConfig:
    return dns_cache_pb2.DnsCacheConfig(
        name="passthrough_dns_cache",
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
    )


def _forward_proxy_cluster(name: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=duration(PASSTHROUGH_CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
    )
    cluster.cluster_type.name = "envoy.clusters.dynamic_forward_proxy"
    cluster.cluster_type.typed_config.CopyFrom(
        pack(dfp_cluster_pb2.ClusterConfig(dns_cache_config=_dns_cache()))
    )
    return cluster


def passthrough_cluster() -> cluster_pb2.Cluster:
    """The HTTP-proxy mode's PassthroughCluster: the Host the app asked for."""
    return _forward_proxy_cluster(PASSTHROUGH_CLUSTER)


def connect_authority_cluster() -> cluster_pb2.Cluster:
    """Where a CONNECT to a wildcard host is tunnelled (connect.py): the
    CONNECT authority's host, resolved, in both capture modes. Not the
    PassthroughCluster, which a transparent sidecar replaces with its
    original destination: that would tunnel to whatever address the app
    dialled, not to the host the route allowed."""
    return _forward_proxy_cluster(CONNECT_AUTHORITY_CLUSTER)


def tunnel_targets(targets: Sequence[RouteDestination]) -> list[RouteDestination]:
    """Where a CONNECT tunnel of a ``tls`` rule sends (connect.py): the
    destinations of weight above 0, or all of them if none has one."""
    return [t for t in targets if t.weight > 0] or list(targets)


def tunnels_to_authority(mesh: MeshConfig) -> bool:
    """Whether a sidecar may get a CONNECT route to the ConnectAuthorityCluster:
    a ``tls`` rule with a match that tunnels to a wildcard host. Ignores
    which proxies see the rule (conservative): the cluster may be present
    unused, never missing under a route that names it (Envoy's 503)."""
    return any(
        rule.match and any("*" in t.destination.host for t in tunnel_targets(rule.route))
        for vs in mesh.virtual_services
        for rule in vs.tls
    )


def original_dst_cluster(name: str) -> cluster_pb2.Cluster:
    """An ORIGINAL_DST cluster (Istio's PassthroughCluster and
    InboundPassthroughCluster of an iptables capture): the address the
    connection was made to."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        connect_timeout=duration(PASSTHROUGH_CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
    )


def blackhole_cluster() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=BLACKHOLE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(PASSTHROUGH_CONNECT_TIMEOUT_S),
    )


def forward_proxy_filter() -> hcm_pb2.HttpFilter:
    """Resolves the Host of requests routed to the PassthroughCluster; other
    requests go by untouched."""
    return hcm_pb2.HttpFilter(
        name=DFP_FILTER,
        typed_config=pack(dfp_filter_pb2.FilterConfig(dns_cache_config=_dns_cache())),
    )


def catch_all_virtual_host(mode: str) -> rc.VirtualHost:
    """Istio's ``allow_any`` / ``block_all`` virtual hosts."""
    if mode == "REGISTRY_ONLY":
        return rc.VirtualHost(
            name="block_all",
            domains=["*"],
            routes=[
                rc.Route(
                    name="block_all",
                    match=rc.RouteMatch(prefix="/"),
                    direct_response=rc.DirectResponseAction(status=502),
                )
            ],
        )
    return rc.VirtualHost(
        name="allow_any",
        domains=["*"],
        routes=[
            rc.Route(
                name="allow_any",
                match=rc.RouteMatch(prefix="/"),
                route=rc.RouteAction(cluster=PASSTHROUGH_CLUSTER, timeout=duration(0)),
            )
        ],
    )
