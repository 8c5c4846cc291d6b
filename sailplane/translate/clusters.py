"""Clusters: one per service port and subset (outbound), one per workload
port (inbound).

Names are Istio's: ``outbound|PORT|SUBSET|FQDN`` and ``inbound|PORT||``.
A DestinationRule's subsets each get their own cluster, with the policy
Istio's precedence gives them (see :meth:`DestinationRule.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from sailplane.model.destinationrules import subset_eds_name
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import ConnectionPool, DestinationRule, TrafficPolicy
from sailplane.model.registry import (
    Endpoint,
    Location,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    subset_endpoints,
)
from sailplane.translate import names
from sailplane.translate.common import ads_config_source, duration
from sailplane.translate.egress import (
    PASSTHROUGH_CONNECT_TIMEOUT_S,
    blackhole_cluster,
    connect_authority_cluster,
    passthrough_cluster,
    tunnels_to_authority,
)
from sailplane.translate.endpoints import build_load_assignment, uses_dns
from sailplane.translate.locality import NEUTRAL_VIEW, balancing
from sailplane.translate.loopguard import upstream_bind
from sailplane.translate.mtls import apply_client_tls, istio_sni
from sailplane.translate.policy import (
    apply_traffic_policy,
    circuit_breakers,
    http_options,
    set_http_options,
)

# Istio's default connectTimeout (MeshConfig.connectTimeout).
DEFAULT_CONNECT_TIMEOUT_S = PASSTHROUGH_CONNECT_TIMEOUT_S


def _set_http2(cluster: cluster_pb2.Cluster) -> None:
    options = http_options(cluster)
    options.explicit_http_config.http2_protocol_options.CopyFrom(
        protocol_pb2.Http2ProtocolOptions()
    )
    set_http_options(cluster, options)


def build_outbound_cluster(
    service: Service,
    port: ServicePort,
    endpoints: tuple[Endpoint, ...],
    rule: DestinationRule | None = None,
    subset: str = "",
    mesh: MeshConfig | None = None,
    eds_name: str = "",
) -> cluster_pb2.Cluster:
    name = names.outbound_cluster_name(port.number, service.hostname, subset)
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    if uses_dns(service, endpoints):
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        if not endpoints and service.resolution is not Resolution.STATIC:
            # MESH_EXTERNAL with resolution DNS and no endpoints: the host itself.
            endpoints = (Endpoint(address=service.hostname),)
        capable = mesh.has_sidecar_mtls if mesh is not None else None
        cluster.load_assignment.CopyFrom(build_load_assignment(name, port, endpoints, capable))
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        # No service_name: Envoy asks EDS for the cluster's own name, which
        # is ours; a copy of it would be ~60 bytes x clusters x proxies.
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
        if eds_name and eds_name != name:  # a selector rule's own subset (endpoints.py)
            cluster.eds_cluster_config.service_name = eds_name
    if port.protocol in (Protocol.HTTP2, Protocol.GRPC):
        _set_http2(cluster)
    policy = rule.policy(port.number, subset) if rule is not None else None
    if policy is not None:
        apply_traffic_policy(cluster, policy)
    else:
        cluster.circuit_breakers.CopyFrom(circuit_breakers(None))
    if mesh is not None:
        _apply_h2_and_locality(cluster, port, policy, mesh)
    tls = policy.tls if policy is not None else None
    if mesh is not None and (tls is not None or service.location is Location.MESH_INTERNAL):
        identities = [
            mesh.spiffe_id(service.namespace, e.service_account)
            for e in endpoints
            if e.service_account
        ]
        apply_client_tls(
            cluster,
            tls,
            sni=istio_sni(port.number, subset, service.hostname),
            external_sni=service.hostname,
            server_identities=identities,
            h2=http_options(cluster).explicit_http_config.HasField("http2_protocol_options"),
        )
    return cluster


def should_h2_upgrade(port: ServicePort, pool: ConnectionPool | None, mesh_upgrade: bool) -> bool:
    """Istio's shouldH2Upgrade (cluster_traffic_policy.go): useClientProtocol
    never upgrades; a rule's UPGRADE upgrades any port (the user says it is
    HTTP) and DO_NOT_UPGRADE none; otherwise the mesh's h2UpgradePolicy,
    for HTTP ports only (never a sniffed or TCP one)."""
    if pool is not None:
        if pool.use_client_protocol:
            return False
        if pool.h2_upgrade_policy != "DEFAULT":
            return pool.h2_upgrade_policy == "UPGRADE"
    return port.protocol.is_http and mesh_upgrade


def _apply_h2_and_locality(
    cluster: cluster_pb2.Cluster, port: ServicePort, policy: TrafficPolicy | None, mesh: MeshConfig
) -> None:
    pool = policy.connection_pool if policy is not None else None
    if should_h2_upgrade(port, pool, mesh.settings.h2_upgrade_policy == "UPGRADE"):
        _set_http2(cluster)
    # Istio's applyLoadBalancer: locality weights count only with this set.
    if balancing(mesh, policy, NEUTRAL_VIEW).weighted_config:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()


def build_service_clusters(
    mesh: MeshConfig, service: Service, selected: DestinationRule | None = None
) -> list[cluster_pb2.Cluster]:
    """The outbound clusters of ``service``: one per port, times no subset
    and each DestinationRule subset. None for a wildcard host (it needs a
    dynamic forward proxy; not routed yet). ``selected``: a rule with a
    workloadSelector, for the clusters of the proxies it picks."""
    if "*" in service.hostname:
        return []
    endpoints = mesh.endpoints_of(service)
    shared = mesh.destination_rule_for(service.hostname)
    rule = selected or shared
    out = []
    for port in service.ports:
        out.append(build_outbound_cluster(service, port, endpoints, rule, mesh=mesh))
        for subset in rule.subsets if rule else ():
            chosen = subset_endpoints(endpoints, subset.labels)
            eds_name = ""
            if selected is not None:
                name = names.outbound_cluster_name(port.number, service.hostname, subset.name)
                eds_name = subset_eds_name(name, shared, selected, subset.name)
            out.append(
                build_outbound_cluster(service, port, chosen, rule, subset.name, mesh, eds_name)
            )
    return out


def build_selected_clusters(
    mesh: MeshConfig, namespace: str, labels: Mapping[str, str]
) -> list[cluster_pb2.Cluster]:
    """The outbound clusters a proxy of ``namespace`` with ``labels`` gets
    in place of the shared ones, because a DestinationRule with a
    workloadSelector picks it (Istio: SidecarScope.DestinationRule). None
    for most proxies: a selector costs only the proxies it selects."""
    out: list[cluster_pb2.Cluster] = []
    for service in mesh.services_with_selector_rules:
        rule = mesh.destination_rule_for_proxy(service.hostname, namespace, labels)
        if rule is not None and rule.workload_selector:
            out.extend(build_service_clusters(mesh, service, rule))
    return out


def build_outbound_clusters(mesh: MeshConfig) -> list[cluster_pb2.Cluster]:
    clusters: list[cluster_pb2.Cluster] = []
    for service in mesh.services:
        clusters.extend(build_service_clusters(mesh, service))
    clusters.extend(mesh_clusters(mesh))
    return sorted(clusters, key=lambda c: c.name)


def mesh_clusters(mesh: MeshConfig) -> list[cluster_pb2.Cluster]:
    """The clusters every sidecar has whatever the services: the outbound
    traffic policy's pass-through and black hole, and the CONNECT
    authority's while a ``tls`` rule tunnels to a wildcard host."""
    if tunnels_to_authority(mesh):
        return [passthrough_cluster(), connect_authority_cluster(), blackhole_cluster()]
    return [passthrough_cluster(), blackhole_cluster()]


def build_inbound_cluster(
    workload_port: int, app_address: str, protocol: Protocol = Protocol.UNKNOWN
) -> cluster_pb2.Cluster:
    """``inbound|PORT||``: the app itself, on its local address, connected
    to from 127.0.0.6 so the inbound listeners know the proxy's own
    connections should the app's port be gone (loopguard.py)."""
    name = names.inbound_cluster_name(workload_port)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT_S),
    )
    local = ServicePort(workload_port, "", Protocol.UNKNOWN)
    cluster.load_assignment.CopyFrom(
        build_load_assignment(name, local, (Endpoint(address=app_address),))
    )
    bind = upstream_bind(app_address)
    if bind is not None:
        cluster.upstream_bind_config.CopyFrom(bind)
    # Istio's setUpstreamProtocol (cluster_builder.go), inbound as outbound:
    # HTTP/2 to an HTTP2 or GRPC port, HTTP/1.1 to an HTTP one (so a caller
    # that upgraded to h2, h2UpgradePolicy, reaches an HTTP/1.1 app), and
    # the caller's protocol only to a port whose protocol is sniffed.
    if protocol in (Protocol.HTTP2, Protocol.GRPC):
        _set_http2(cluster)
    elif protocol is Protocol.UNKNOWN:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            use_downstream_protocol_config=http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
            )
        )
        set_http_options(cluster, options)
    return cluster
