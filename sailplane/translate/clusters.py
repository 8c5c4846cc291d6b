"""Clusters: one per service port (outbound) and one per workload port (inbound)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Endpoint, Protocol, Resolution, Service, ServicePort
from sailplane.translate import names
from sailplane.translate.common import ads_config_source, duration, pack
from sailplane.translate.endpoints import build_load_assignment, uses_dns

# Istio's default connectTimeout (MeshConfig.connectTimeout).
DEFAULT_CONNECT_TIMEOUT_S = 10.0
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _http2_options() -> cluster_pb2.Cluster:
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    cluster = cluster_pb2.Cluster()
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS_KEY].CopyFrom(pack(options))
    return cluster


def build_outbound_cluster(
    service: Service, port: ServicePort, endpoints: tuple[Endpoint, ...]
) -> cluster_pb2.Cluster:
    name = names.outbound_cluster_name(port.number, service.hostname)
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
        cluster.load_assignment.CopyFrom(build_load_assignment(name, port, endpoints))
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
        cluster.eds_cluster_config.service_name = name
    if port.protocol.name in ("HTTP2", "GRPC"):
        cluster.MergeFrom(_http2_options())
    return cluster


def build_outbound_clusters(mesh: MeshConfig) -> list[cluster_pb2.Cluster]:
    clusters: list[cluster_pb2.Cluster] = []
    for service in mesh.services:
        if "*" in service.hostname:
            continue  # wildcard hosts need a dynamic forward proxy; not routed yet
        endpoints = mesh.endpoints_of(service)
        clusters.extend(build_outbound_cluster(service, port, endpoints) for port in service.ports)
    return sorted(clusters, key=lambda c: c.name)


def build_inbound_cluster(workload_port: int, app_address: str) -> cluster_pb2.Cluster:
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
    return cluster
