"""One configuration's mesh-wide resources, translated and encoded once, and
how the next configuration's are derived from them.

Every sidecar shares the outbound clusters and ClusterLoadAssignments of the
mesh. They are built per service (a service's clusters and endpoints depend
on the service, its instances and its DestinationRule, see
translate/impact.py), so a change re-translates and re-encodes the services
it touches and keeps every other resource's bytes: one WorkloadEntry moving
re-encodes its services' ClusterLoadAssignments and nothing else, and when
the clusters come out byte-identical the cluster table keeps its version and
nothing but EDS is pushed (Istio's EDS-only push).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Service
from sailplane.translate.clusters import build_service_clusters, mesh_clusters
from sailplane.translate.endpoints import build_service_endpoints
from sailplane.translate.impact import FULL, Impact
from sailplane.xds import CLUSTER, ENDPOINT, TypeResources


@dataclass(frozen=True, slots=True)
class Generation:
    """The mesh-wide resources of one configuration. Immutable."""

    mesh: MeshConfig
    clusters: TypeResources  # every service's outbound clusters, and the mesh's own
    endpoints: TypeResources  # every EDS cluster's ClusterLoadAssignment
    # hostname -> names of its resources, so a rebuild knows what it replaces.
    cluster_names: Mapping[str, tuple[str, ...]]
    endpoint_names: Mapping[str, tuple[str, ...]]
    impact: Impact = FULL  # how this generation differs from the one before


def _encoded(messages: Iterable[Message], name_field: str) -> list[tuple[str, bytes]]:
    return [(getattr(m, name_field), m.SerializeToString(deterministic=True)) for m in messages]


def _service_resources(
    mesh: MeshConfig, service: Service
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    return (
        _encoded(build_service_clusters(mesh, service), "name"),
        _encoded(build_service_endpoints(mesh, service), "cluster_name"),
    )


def build_generation(mesh: MeshConfig) -> Generation:
    """Translate every service (a full push)."""
    clusters = _encoded(mesh_clusters(), "name")
    endpoints: list[tuple[str, bytes]] = []
    cluster_names, endpoint_names = {}, {}
    for service in mesh.services:
        own_clusters, own_endpoints = _service_resources(mesh, service)
        clusters.extend(own_clusters)
        endpoints.extend(own_endpoints)
        cluster_names[service.hostname] = tuple(n for n, _ in own_clusters)
        endpoint_names[service.hostname] = tuple(n for n, _ in own_endpoints)
    return Generation(
        mesh,
        TypeResources.from_values(CLUSTER, clusters),
        TypeResources.from_values(ENDPOINT, endpoints),
        cluster_names,
        endpoint_names,
    )


def next_generation(previous: Generation, mesh: MeshConfig, impact: Impact) -> Generation:
    """``mesh``'s resources, re-translating only the services ``impact`` names
    (everything, if it is full). Equal to :func:`build_generation` of ``mesh``."""
    if impact.full:
        return build_generation(mesh)
    cluster_names = dict(previous.cluster_names)
    endpoint_names = dict(previous.endpoint_names)
    new_clusters: list[tuple[str, bytes]] = []
    new_endpoints: list[tuple[str, bytes]] = []
    gone_clusters: list[str] = []
    gone_endpoints: list[str] = []
    for hostname in sorted(impact.services):
        gone_clusters.extend(cluster_names.pop(hostname, ()))
        gone_endpoints.extend(endpoint_names.pop(hostname, ()))
        service = mesh.services_by_host.get(hostname)
        if service is None:
            continue
        own_clusters, own_endpoints = _service_resources(mesh, service)
        new_clusters.extend(own_clusters)
        new_endpoints.extend(own_endpoints)
        cluster_names[hostname] = tuple(n for n, _ in own_clusters)
        endpoint_names[hostname] = tuple(n for n, _ in own_endpoints)
    return Generation(
        mesh,
        previous.clusters.replace(TypeResources.from_values(CLUSTER, new_clusters), gone_clusters),
        previous.endpoints.replace(
            TypeResources.from_values(ENDPOINT, new_endpoints), gone_endpoints
        ),
        cluster_names,
        endpoint_names,
        impact,
    )
