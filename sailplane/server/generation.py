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
from dataclasses import dataclass, field

from google.protobuf.message import Message

from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Service
from sailplane.translate import Proxy
from sailplane.translate.clusters import build_service_clusters, mesh_clusters
from sailplane.translate.egress import (
    CONNECT_AUTHORITY_CLUSTER,
    connect_authority_cluster,
    tunnels_to_authority,
)
from sailplane.translate.endpoints import build_service_endpoints, locality_dependent
from sailplane.translate.impact import FULL, Impact
from sailplane.translate.locality import (
    NEUTRAL_VIEW,
    LocalityView,
    priority_label_names,
    proxy_view,
)
from sailplane.xds import CLUSTER, ENDPOINT, TypeResources, merge_types


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
    # Locality load balancing: the services whose assignments depend on the
    # proxy's locality (translate/locality.py), the labels failoverPriority
    # names, and the assignments per view, built when a proxy of that view
    # first asks (so the cost is per locality, not per proxy).
    located: frozenset[str] = frozenset()
    priority_labels: frozenset[str] = frozenset()
    _view_hosts: dict[LocalityView, dict[str, list[tuple[str, bytes]]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _views: dict[LocalityView, TypeResources] = field(
        default_factory=dict, compare=False, repr=False
    )

    def endpoints_for(self, proxy: Proxy) -> TypeResources:
        """The assignments ``proxy`` gets: the shared ones, with those of
        the located services as its locality sees them."""
        if not self.located:
            return self.endpoints
        view = proxy_view(proxy.locality, proxy.workload.labels, self.priority_labels)
        if view == NEUTRAL_VIEW:
            return self.endpoints
        found = self._views.get(view)
        if found is None:
            hosts = self._view_hosts.setdefault(view, {})
            values: list[tuple[str, bytes]] = []
            for hostname in sorted(self.located):
                encoded = hosts.get(hostname)
                if encoded is None:
                    service = self.mesh.services_by_host[hostname]
                    assignments = build_service_endpoints(self.mesh, service, view)
                    encoded = hosts[hostname] = _encoded(assignments, "cluster_name")
                values.extend(encoded)
            overlay = TypeResources.from_values(ENDPOINT, values)
            found = self._views[view] = merge_types(self.endpoints, overlay)
        return found


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
    clusters = _encoded(mesh_clusters(mesh), "name")
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
        located=frozenset(s.hostname for s in mesh.services if locality_dependent(mesh, s)),
        priority_labels=priority_label_names(mesh),
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
    # The mesh's own clusters: the CONNECT authority's comes and goes with
    # the tls rules that tunnel to it (egress.tunnels_to_authority).
    needed = tunnels_to_authority(mesh)
    if needed != (CONNECT_AUTHORITY_CLUSTER in previous.clusters.chunks):
        if needed:
            new_clusters.extend(_encoded([connect_authority_cluster()], "name"))
        else:
            gone_clusters.append(CONNECT_AUTHORITY_CLUSTER)
    touched = impact.services
    located = {h for h in previous.located if h not in touched}
    located.update(
        h
        for h in touched
        if (service := mesh.services_by_host.get(h)) is not None
        and locality_dependent(mesh, service)
    )
    # A view's assignments of untouched services stay as they were.
    view_hosts = {
        view: {h: v for h, v in hosts.items() if h not in touched}
        for view, hosts in previous._view_hosts.items()
    }
    return Generation(
        mesh,
        previous.clusters.replace(TypeResources.from_values(CLUSTER, new_clusters), gone_clusters),
        previous.endpoints.replace(
            TypeResources.from_values(ENDPOINT, new_endpoints), gone_endpoints
        ),
        cluster_names,
        endpoint_names,
        impact,
        frozenset(located),
        priority_label_names(mesh),
        view_hosts,
    )
