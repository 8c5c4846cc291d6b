"""Look-ups over one configuration that the access log stream needs per
entry: workloads by address and identity, the instances behind a cluster,
whether a hop is mTLS. Built lazily, kept with the configuration they index
(a new configuration gets a new index), so their size is the registry's."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from sailplane.model.hosts import host_aliases
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Location, Service, Workload, subset_endpoints


class MeshIndex:
    """Look-ups over one configuration, built lazily and kept with it."""

    def __init__(self, mesh: MeshConfig) -> None:
        self.mesh = mesh
        # Bounded by the configuration: clusters and (cluster, instance) pairs.
        self._instances: dict[tuple[str, str], tuple[Workload, ...]] = {}
        self._mtls: dict[tuple[str, int, str, str], bool] = {}

    @cached_property
    def workloads_by_address(self) -> Mapping[str, Workload]:
        out: dict[str, Workload] = {}
        for workload in self.mesh.workloads:
            out.setdefault(workload.address, workload)
        return out

    @cached_property
    def workloads_by_identity(self) -> Mapping[str, tuple[Workload, ...]]:
        out: dict[str, list[Workload]] = {}
        for w in self.mesh.workloads:
            out.setdefault(self.mesh.spiffe_id(w.namespace, w.service_account), []).append(w)
        return {k: tuple(v) for k, v in out.items()}

    def identity(self, workload: Workload) -> str:
        return self.mesh.spiffe_id(workload.namespace, workload.service_account)

    def cluster_instances(self, service: Service, subset: str) -> tuple[Workload, ...]:
        """The WorkloadEntries behind an outbound cluster."""
        key = (service.hostname, subset)
        found = self._instances.get(key)
        if found is None:
            found = self._instances[key] = self._cluster_instances(service, subset)
        return found

    def _cluster_instances(self, service: Service, subset: str) -> tuple[Workload, ...]:
        endpoints = self.mesh.endpoints_of(service)
        if subset:
            rule = self.mesh.destination_rule_for(service.hostname)
            chosen = rule.subset(subset) if rule is not None else None
            endpoints = subset_endpoints(endpoints, chosen.labels if chosen else None)
        ids = self.mesh.workloads_by_id
        return tuple(ids[e.workload] for e in endpoints if e.workload in ids)

    def uses_mtls(self, service: Service, port: int, subset: str, workload: Workload) -> bool:
        """Whether sailplane's configuration makes this hop mTLS (see clusters.py)."""
        key = (service.hostname, port, subset, workload.id)
        found = self._mtls.get(key)
        if found is None:
            found = self._mtls[key] = self._uses_mtls(service, port, subset, workload)
        return found

    def _uses_mtls(self, service: Service, port: int, subset: str, workload: Workload) -> bool:
        rule = self.mesh.destination_rule_for(service.hostname)
        tls = rule.policy(port, subset).tls if rule is not None else None
        if tls is not None:
            return tls.mode == "ISTIO_MUTUAL"
        if service.location is not Location.MESH_INTERNAL:
            return False
        endpoint = workload.endpoint()
        service_port = next((p for p in service.ports if p.number == port), None)
        workload_port = endpoint.port_for(service_port) if service_port else port
        return self.mesh.has_sidecar_mtls(endpoint, workload_port)

    def inbound_service(self, workload: Workload, port: int, authority: str) -> Service | None:
        """The service a request to ``workload`` on its ``port`` was for."""
        endpoint = workload.endpoint()
        candidates = [
            s
            for s in self.mesh.services_of(workload)
            if any(endpoint.port_for(p) == port for p in s.ports)
        ]
        if len(candidates) > 1 and authority:
            host = authority.rpartition(":")[0] if authority.count(":") == 1 else authority
            for service in candidates:
                if host in host_aliases(service.hostname, workload.namespace):
                    return service
        return candidates[0] if candidates else None
