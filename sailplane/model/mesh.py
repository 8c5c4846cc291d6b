"""The whole mesh as one immutable value: what translation consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sailplane.model.registry import Endpoint, Service, Workload, selector_matches
from sailplane.model.source import Diagnostic


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object in force and where it came from (for ``/debug/configz``)."""

    kind: str
    namespace: str
    name: str
    file: str
    line: int


@dataclass(frozen=True)
class MeshConfig:
    """A validated configuration. Built by :mod:`sailplane.config`, never mutated."""

    services: tuple[Service, ...] = ()
    workloads: tuple[Workload, ...] = ()
    objects: tuple[ObjectRef, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    domain_suffix: str = "cluster.local"
    # Content hash of every input file, so two loads of the same tree compare equal.
    digest: str = field(default="", compare=False)

    @cached_property
    def workloads_by_id(self) -> Mapping[str, Workload]:
        return {w.id: w for w in self.workloads}

    @cached_property
    def services_by_host(self) -> Mapping[str, Service]:
        return {s.hostname: s for s in self.services}

    def endpoints_of(self, service: Service) -> tuple[Endpoint, ...]:
        """The service's instances: inline ServiceEntry endpoints plus every
        WorkloadEntry in the same namespace whose labels match its selector."""
        found = list(service.endpoints)
        if service.selector:
            found.extend(
                w.endpoint()
                for w in self.workloads
                if w.namespace == service.namespace and selector_matches(service.selector, w.labels)
            )
        return tuple(found)

    def services_of(self, workload: Workload) -> tuple[Service, ...]:
        """The services whose selector picks ``workload`` (its inbound side)."""
        return tuple(
            s
            for s in self.services
            if s.selector
            and s.namespace == workload.namespace
            and selector_matches(s.selector, workload.labels)
        )
