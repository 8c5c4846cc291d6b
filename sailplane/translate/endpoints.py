"""ClusterLoadAssignments: the instances behind each outbound cluster."""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from sailplane.model.destinationrules import subset_eds_name
from sailplane.model.hosts import is_ip_address
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import DestinationRule
from sailplane.model.registry import (
    Endpoint,
    Locality,
    Resolution,
    Service,
    ServicePort,
    subset_endpoints,
)
from sailplane.translate import names
from sailplane.translate.common import socket_address
from sailplane.translate.locality import (
    NEUTRAL_VIEW,
    Balancing,
    LocalityView,
    apply_locality_lb,
    balancing,
    group_by_locality,
)
from sailplane.translate.mtls import tls_match_metadata


def envoy_locality(locality: Locality) -> base_pb2.Locality:
    return base_pb2.Locality(region=locality.region, zone=locality.zone, sub_zone=locality.subzone)


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
    balancing: Balancing | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """One LocalityLbEndpoints per locality (in locality order), endpoints
    sorted by address so output is deterministic. Instances with a sidecar
    carry the metadata auto mTLS matches on. Each group has its locality
    (with localities, or locality settings that apply; else one empty) and
    its weight (the sum of its endpoints', as Istio's EndpointBuilder), and
    ``balancing`` sets the priorities and weights for the proxy
    (translate/locality.py)."""
    located = balancing is not None and balancing.applies
    located = located or any(e.locality for e in endpoints)
    groups = group_by_locality(endpoints) if located else [(Locality(), list(endpoints))]
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    members: list[list[Endpoint]] = []
    for locality, found in groups:
        chosen = sorted(found, key=lambda e: (e.address, e.port_for(port)))
        lb_endpoints = [_lb_endpoint(e, port, mtls_capable) for e in chosen]
        if not lb_endpoints:
            continue
        group = endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)
        # Always a locality (empty when unknown) and a weight (the sum of the
        # endpoints'), as Istio's EndpointBuilder: gRPC's xDS client rejects
        # a group without either (gRFC A27), and Envoy reads the weight only
        # under locality-weighted balancing, which then needs it.
        group.locality.CopyFrom(envoy_locality(locality))
        group.load_balancing_weight.value = sum(e.weight for e in chosen)
        assignment.endpoints.append(group)
        members.append(chosen)
    if balancing is not None and members:
        apply_locality_lb(assignment, members, balancing)
    return assignment


def _lb_endpoint(
    e: Endpoint, port: ServicePort, mtls_capable: Callable[[Endpoint, int], bool] | None
) -> endpoint_components_pb2.LbEndpoint:
    lb_endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=socket_address(e.address, e.port_for(port))
        )
    )
    if e.weight > 1:  # unset is 1 to Envoy; said only when it differs
        lb_endpoint.load_balancing_weight.value = e.weight
    if mtls_capable is not None and mtls_capable(e, e.port_for(port)):
        lb_endpoint.metadata.CopyFrom(tls_match_metadata())
    return lb_endpoint


def build_service_endpoints(
    mesh: MeshConfig, service: Service, view: LocalityView = NEUTRAL_VIEW
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One assignment per EDS cluster of ``service`` (its ports, times no
    subset and each DestinationRule subset), as a proxy with ``view`` (its
    locality) gets them; none for DNS clusters, which carry their
    endpoints inline (see :func:`uses_dns`)."""
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
            how = _balancing(mesh, rule, port.number, subset, view)
            out.append(build_load_assignment(name, port, chosen, mesh.has_sidecar_mtls, how))
        # The subsets only rules with a workloadSelector define (or define
        # otherwise), for the proxies they pick (clusters.build_selected_clusters).
        done = {a.cluster_name for a in out}
        for selected in mesh.selector_rules_for(service.hostname):
            for s in selected.subsets:
                cluster = names.outbound_cluster_name(port.number, service.hostname, s.name)
                name = subset_eds_name(cluster, rule, selected, s.name)
                if name not in done:
                    done.add(name)
                    chosen = subset_endpoints(endpoints, s.labels)
                    how = _balancing(mesh, selected, port.number, s.name, view)
                    out.append(
                        build_load_assignment(name, port, chosen, mesh.has_sidecar_mtls, how)
                    )
    return out


def _balancing(
    mesh: MeshConfig, rule: DestinationRule | None, port: int, subset: str, view: LocalityView
) -> Balancing:
    return balancing(mesh, rule.policy(port, subset) if rule is not None else None, view)


def locality_dependent(mesh: MeshConfig, service: Service) -> bool:
    """Whether a proxy's locality changes ``service``'s assignments (a rule
    with outlier detection, or a distribute setting, reaches one of them)."""
    if "*" in service.hostname:
        return False
    rules = [
        mesh.destination_rule_for(service.hostname),
        *mesh.selector_rules_for(service.hostname),
    ]
    for rule in rules:
        for port in service.ports:
            for subset in ("", *(s.name for s in rule.subsets)) if rule else ("",):
                if _balancing(mesh, rule, port.number, subset, NEUTRAL_VIEW).applies:
                    return True
    return False


def build_endpoints(
    mesh: MeshConfig, view: LocalityView = NEUTRAL_VIEW
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """Every service's assignments (as a proxy with ``view`` sees them), sorted by cluster name."""
    out = [a for service in mesh.services for a in build_service_endpoints(mesh, service, view)]
    return sorted(out, key=lambda a: a.cluster_name)
