"""Clusters: one per service port and subset (outbound), one per workload
port (inbound).

Names are Istio's: ``outbound|PORT|SUBSET|FQDN`` and ``inbound|PORT||``.
A DestinationRule's subsets each get their own cluster, with the policy
Istio's precedence gives them (see :meth:`DestinationRule.policy`).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import DestinationRule
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
from sailplane.translate.egress import blackhole_cluster, passthrough_cluster
from sailplane.translate.endpoints import build_load_assignment, uses_dns
from sailplane.translate.mtls import apply_client_tls, istio_sni
from sailplane.translate.policy import (
    apply_traffic_policy,
    circuit_breakers,
    http_options,
    set_http_options,
)

# Istio's default connectTimeout (MeshConfig.connectTimeout).
DEFAULT_CONNECT_TIMEOUT_S = 10.0


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
    if port.protocol in (Protocol.HTTP2, Protocol.GRPC):
        _set_http2(cluster)
    policy = rule.policy(port.number, subset) if rule is not None else None
    if policy is not None:
        apply_traffic_policy(cluster, policy)
    else:
        cluster.circuit_breakers.CopyFrom(circuit_breakers(None))
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
        )
    return cluster


def build_service_clusters(mesh: MeshConfig, service: Service) -> list[cluster_pb2.Cluster]:
    """The outbound clusters of ``service``: one per port, times no subset
    and each DestinationRule subset. None for a wildcard host (it needs a
    dynamic forward proxy; not routed yet)."""
    if "*" in service.hostname:
        return []
    endpoints = mesh.endpoints_of(service)
    rule = mesh.destination_rule_for(service.hostname)
    out = []
    for port in service.ports:
        out.append(build_outbound_cluster(service, port, endpoints, rule, mesh=mesh))
        for subset in rule.subsets if rule else ():
            chosen = subset_endpoints(endpoints, subset.labels)
            out.append(build_outbound_cluster(service, port, chosen, rule, subset.name, mesh))
    return out


def build_outbound_clusters(mesh: MeshConfig) -> list[cluster_pb2.Cluster]:
    clusters: list[cluster_pb2.Cluster] = []
    for service in mesh.services:
        clusters.extend(build_service_clusters(mesh, service))
    clusters.extend(mesh_clusters())
    return sorted(clusters, key=lambda c: c.name)


def mesh_clusters() -> list[cluster_pb2.Cluster]:
    """The clusters every sidecar has whatever the services: the outbound
    traffic policy's pass-through and black hole."""
    return [passthrough_cluster(), blackhole_cluster()]


def build_inbound_cluster(
    workload_port: int, app_address: str, protocol: Protocol = Protocol.UNKNOWN
) -> cluster_pb2.Cluster:
    """``inbound|PORT||``: the app itself, on its local address."""
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
    if protocol.is_http or protocol is Protocol.UNKNOWN:
        # As Istio's inbound clusters: speak to the app in the caller's protocol.
        options = http_protocol_options_pb2.HttpProtocolOptions(
            use_downstream_protocol_config=http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
            )
        )
        set_http_options(cluster, options)
    return cluster
