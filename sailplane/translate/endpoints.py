"""ClusterLoadAssignments: the instances behind each outbound cluster."""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from sailplane.model.hosts import is_ip_address
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import (
    Endpoint,
    Resolution,
    Service,
    ServicePort,
    subset_endpoints,
)
from sailplane.translate import names
from sailplane.translate.common import socket_address
from sailplane.translate.mtls import tls_match_metadata


def uses_dns(service: Service, endpoints: tuple[Endpoint, ...]) -> bool:
    """EDS carries IP addresses only; a service resolved by DNS, or whose
    instances are named by host name (compose service names), becomes a
    STRICT_DNS cluster with its endpoints inline, as Istio does for
    ``resolution: DNS``."""
    if service.resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        return True
    return any(not is_ip_address(e.address) for e in endpoints)


def build_load_assignment(
    cluster_name: str,
    port: ServicePort,
    endpoints: tuple[Endpoint, ...],
    mtls_capable: Callable[[Endpoint, int], bool] | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality, endpoints sorted by address so output is deterministic.
    Instances with a sidecar carry the metadata auto mTLS matches on."""
    lb_endpoints = []
    for e in sorted(endpoints, key=lambda e: (e.address, e.port_for(port))):
        lb_endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=socket_address(e.address, e.port_for(port))
            )
        )
        if e.weight > 1:  # unset is 1 to Envoy; said only when it differs
            lb_endpoint.load_balancing_weight.value = e.weight
        if mtls_capable is not None and mtls_capable(e, e.port_for(port)):
            lb_endpoint.metadata.CopyFrom(tls_match_metadata())
        lb_endpoints.append(lb_endpoint)
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    if lb_endpoints:
        assignment.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)
        )
    return assignment


def build_service_endpoints(
    mesh: MeshConfig, service: Service
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One assignment per EDS cluster of ``service`` (its ports, times no
    subset and each DestinationRule subset); none for DNS clusters, which
    carry their endpoints inline (see :func:`uses_dns`)."""
    if "*" in service.hostname:
        return []
    endpoints = mesh.endpoints_of(service)
    if uses_dns(service, endpoints):
        return []
    rule = mesh.destination_rule_for(service.hostname)
    subsets = [("", endpoints)] + [
        (s.name, subset_endpoints(endpoints, s.labels)) for s in (rule.subsets if rule else ())
    ]
    out = []
    for port in service.ports:
        for subset, chosen in subsets:
            name = names.outbound_cluster_name(port.number, service.hostname, subset)
            out.append(build_load_assignment(name, port, chosen, mesh.has_sidecar_mtls))
    return out


def build_endpoints(mesh: MeshConfig) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """Every service's assignments, sorted by cluster name."""
    out = [a for service in mesh.services for a in build_service_endpoints(mesh, service)]
    return sorted(out, key=lambda a: a.cluster_name)
