"""The whole mesh as one immutable value: what translation consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sailplane.model.hosts import host_matches
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
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
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    gateways: tuple[Gateway, ...] = ()
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

    @cached_property
    def gateways_by_key(self) -> Mapping[str, Gateway]:
        return {g.key: g for g in self.gateways}

    @cached_property
    def _rules_by_host(self) -> Mapping[str, DestinationRule]:
        # Several rules for one host: the first by namespace/name wins, as the
        # loader reports (Istio merges only in restricted cases).
        out: dict[str, DestinationRule] = {}
        for rule in self.destination_rules:
            out.setdefault(rule.host, rule)
        return out

    def destination_rule_for(self, hostname: str) -> DestinationRule | None:
        """The rule for a host: an exact host first, then the most specific
        wildcard (istio.io: "the most specific matching host wins")."""
        exact = self._rules_by_host.get(hostname)
        if exact is not None:
            return exact
        best: DestinationRule | None = None
        for host, rule in self._rules_by_host.items():
            if host_matches(host, hostname) and (best is None or len(host) > len(best.host)):
                best = rule
        return best

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
