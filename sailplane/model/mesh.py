"""The whole mesh as one immutable value: what translation consumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.credentials import TLSSecret
from sailplane.model.destinationrules import (
    Consolidated,
    consolidated,
    most_specific,
    selecting_rule,
)
from sailplane.model.hosts import host_matches
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
from sailplane.model.registry import Endpoint, Service, Workload, selector_matches
from sailplane.model.security import (
    DEFAULT_ROOT_NAMESPACE,
    TLS_MODE_LABEL,
    PeerAuthentication,
    RequestAuthentication,
)
from sailplane.model.sidecar import MeshSettings, OutboundMode, Sidecar
from sailplane.model.source import Diagnostic
from sailplane.model.telemetry import Telemetry


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
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    request_authentications: tuple[RequestAuthentication, ...] = ()
    sidecars: tuple[Sidecar, ...] = ()
    telemetries: tuple[Telemetry, ...] = ()
    # Kubernetes TLS Secrets, for credentialName (key material: never in a repr).
    secrets: tuple[TLSSecret, ...] = field(default=(), repr=False)
    settings: MeshSettings = field(default_factory=MeshSettings)
    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    objects: tuple[ObjectRef, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    domain_suffix: str = "cluster.local"
    trust_domain: str = "cluster.local"
    # Content hash of every input file, so two loads of the same tree compare equal.
    digest: str = field(default="", compare=False)

    def with_fields(self, **changes: object) -> MeshConfig:
        """This mesh with new values of fields that no index reads (what is
        in force, the diagnostics, the digest, the trust domain), keeping
        the indexes (cached properties) built on it so far. A load builds
        most of them in its checks; translation then uses the same ones,
        instead of building them again on the event loop for each change."""
        unknown = changes.keys() - _NOT_INDEXED
        if unknown:
            raise ValueError(f"indexes may depend on {sorted(unknown)}: use dataclasses.replace")
        new = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        for name in _INDEXES.intersection(vars(self)):
            new.__dict__[name] = self.__dict__[name]
        return new

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
    def _rules(self) -> Consolidated:
        # Merged as Istio merges them (model/destinationrules.py).
        return consolidated(self.destination_rules)

    def destination_rule_for(self, hostname: str) -> DestinationRule | None:
        """The (merged) rule every proxy uses for a host unless a rule with a
        workloadSelector picks it: an exact host first, then the most
        specific wildcard (istio.io: "the most specific matching host wins")."""
        return most_specific(self._rules[0], hostname)

    def selector_rules_for(self, hostname: str) -> tuple[DestinationRule, ...]:
        """The (merged) rules with a workloadSelector whose host matches ``hostname``."""
        return tuple(
            rule
            for host, group in self._rules[1].items()
            if host_matches(host, hostname)
            for rule in group
        )

    @cached_property
    def services_with_selector_rules(self) -> tuple[Service, ...]:
        """The services some DestinationRule with a workloadSelector matches."""
        hosts = self._rules[1]
        if not hosts:
            return ()
        return tuple(s for s in self.services if any(host_matches(h, s.hostname) for h in hosts))

    def destination_rule_for_proxy(
        self, hostname: str, namespace: str, labels: Mapping[str, str]
    ) -> DestinationRule | None:
        """The rule a proxy of ``namespace`` with ``labels`` uses for a host:
        a rule with a workloadSelector that picks it, else the shared one."""
        shared = self.destination_rule_for(hostname)
        if not self._rules[1]:
            return shared
        own = selecting_rule(self._rules[1], shared, hostname, namespace, labels)
        return own if own is not None else shared

    @cached_property
    def _label_index(self) -> Mapping[tuple[str, str, str], tuple[Workload, ...]]:
        """(namespace, label, value) -> workloads: selectors become set
        intersections instead of a scan of every workload per service."""
        index: dict[tuple[str, str, str], list[Workload]] = {}
        for w in self.workloads:
            for key, value in w.labels.items():
                index.setdefault((w.namespace, key, value), []).append(w)
        return {k: tuple(v) for k, v in index.items()}

    def selected_workloads(
        self, namespace: str, selector: Mapping[str, str]
    ) -> tuple[Workload, ...]:
        """Workloads of ``namespace`` whose labels include ``selector`` (in id order)."""
        if not selector:
            return ()
        groups = [self._label_index.get((namespace, k, v), ()) for k, v in selector.items()]
        smallest = min(groups, key=len)
        if len(groups) == 1 or not smallest:
            return smallest  # already in id order
        others = [{w.id for w in g} for g in groups if g is not smallest]
        return tuple(w for w in smallest if all(w.id in ids for ids in others))

    @cached_property
    def _virtual_services_by_host(
        self,
    ) -> tuple[Mapping[str, tuple[VirtualService, ...]], tuple[VirtualService, ...]]:
        """(exact host -> VirtualServices naming it, VirtualServices with a
        wildcard host), each in :attr:`virtual_services` order."""
        exact: dict[str, list[VirtualService]] = {}
        wildcard: list[VirtualService] = []
        for vs in self.virtual_services:
            for host in dict.fromkeys(vs.hosts):
                if "*" in host:
                    if not wildcard or wildcard[-1] is not vs:
                        wildcard.append(vs)
                else:
                    exact.setdefault(host, []).append(vs)
        return {h: tuple(v) for h, v in exact.items()}, tuple(wildcard)

    def virtual_services_for_host(self, hostname: str) -> tuple[VirtualService, ...]:
        """The VirtualServices that may route ``hostname`` (an exact host, or a
        wildcard; the caller checks which host matches), in mesh order."""
        exact, wildcard = self._virtual_services_by_host
        named = exact.get(hostname, ())
        if not wildcard:
            return named
        if not named:
            return wildcard
        order = self._virtual_service_order
        both = {id(vs): vs for vs in (*named, *wildcard)}
        return tuple(sorted(both.values(), key=lambda vs: order[id(vs)]))

    @cached_property
    def _virtual_service_order(self) -> Mapping[int, int]:
        return {id(vs): i for i, vs in enumerate(self.virtual_services)}

    @cached_property
    def hosts_without_service(self) -> tuple[tuple[str, VirtualService], ...]:
        """Mesh-bound HTTP VirtualService hosts that no service has (a
        wildcard: that matches no service), with their VirtualService, in
        host then mesh order (see translate/vshosts.py)."""
        services = [s.hostname for s in self.services]
        found = []
        for vs in self.virtual_services:
            if not vs.http or "mesh" not in vs.gateways:
                continue
            for host in vs.hosts:
                if host == "*" or host in self.services_by_host:
                    continue
                if host.startswith("*.") and any(host_matches(host, s) for s in services):
                    continue
                found.append((host, vs))
        order = self._virtual_service_order
        return tuple(sorted(found, key=lambda pair: (pair[0], order[id(pair[1])])))

    @cached_property
    def source_label_selectors(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """Every distinct ``sourceLabels`` of the VirtualServices' matches, sorted."""
        labels: list[Mapping[str, str]] = []
        for vs in self.virtual_services:
            labels.extend(m.source_labels for http in vs.http for m in http.match)
            labels.extend(m.source_labels for tls in vs.tls for m in tls.match)
        return tuple(sorted({tuple(sorted(found.items())) for found in labels if found}))

    @cached_property
    def _instances(self) -> Mapping[str, tuple[Endpoint, ...]]:
        return {
            s.hostname: (
                *s.endpoints,
                *(w.endpoint() for w in self.selected_workloads(s.namespace, s.selector or {})),
            )
            for s in self.services
        }

    @cached_property
    def _services_by_workload(self) -> Mapping[str, tuple[Service, ...]]:
        found: dict[str, list[Service]] = {}
        for s in self.services:
            for w in self.selected_workloads(s.namespace, s.selector or {}):
                found.setdefault(w.id, []).append(s)
        return {k: tuple(v) for k, v in found.items()}

    def endpoints_of(self, service: Service) -> tuple[Endpoint, ...]:
        """The service's instances: inline ServiceEntry endpoints plus every
        WorkloadEntry in the same namespace whose labels match its selector."""
        found = self._instances.get(service.hostname)
        if found is not None and self.services_by_host.get(service.hostname) is service:
            return found
        return (
            *service.endpoints,
            *(
                w.endpoint()
                for w in self.selected_workloads(service.namespace, service.selector or {})
            ),
        )

    def spiffe_id(self, namespace: str, service_account: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"

    def has_sidecar_mtls(self, endpoint: Endpoint, port: int) -> bool:
        """Auto mTLS applies to an instance that runs a sidecar (Istio's label
        ``security.istio.io/tlsMode: istio``) and does not DISABLE mTLS."""
        if endpoint.labels.get(TLS_MODE_LABEL) != "istio":
            return False
        workload = self.workloads_by_id.get(endpoint.workload)
        return workload is None or self.mtls_mode(workload, port) != "DISABLE"

    def services_of(self, workload: Workload) -> tuple[Service, ...]:
        """The services whose selector picks ``workload`` (its inbound side)."""
        if self.workloads_by_id.get(workload.id) is workload:
            return self._services_by_workload.get(workload.id, ())
        return tuple(
            s
            for s in self.services
            if s.selector
            and s.namespace == workload.namespace
            and selector_matches(s.selector, workload.labels)
        )

    def _targets(self, policy: PeerAuthentication, workload: Workload) -> bool:
        if policy.namespace != workload.namespace:
            return False
        if policy.selector:
            return selector_matches(policy.selector, workload.labels)
        return any(s.name in policy.target_services for s in self.services_of(workload))

    def mtls_port_levels(self, workload: Workload) -> tuple[int, ...]:
        """The ports the workload's own PeerAuthentication sets a mode for
        (``portLevelMtls``, Istio's PortLevelSetting), in order."""
        for policy in self.peer_authentications:
            if policy.workload_scoped and self._targets(policy, workload):
                return tuple(sorted(policy.port_level))
        return ()

    def mtls_mode(self, workload: Workload, port: int | None = None) -> str:
        """The effective PeerAuthentication mode (PERMISSIVE, STRICT or DISABLE)
        of ``workload`` on its ``port``: workload policy (port level first),
        then namespace policy, then the mesh-wide policy, then PERMISSIVE.
        Several policies at one level: the oldest wins in Istio; here the
        first by name, deterministically."""
        workload_level = [
            p for p in self.peer_authentications if p.workload_scoped and self._targets(p, workload)
        ]
        namespace_level = [
            p
            for p in self.peer_authentications
            if not p.workload_scoped and not p.mesh_wide and p.namespace == workload.namespace
        ]
        mesh_level = [
            p
            for p in self.peer_authentications
            if not p.workload_scoped and (p.mesh_wide or p.namespace == self.root_namespace)
        ]
        candidates: list[str] = []
        for policy in workload_level[:1]:
            if port is not None and port in policy.port_level:
                candidates.append(policy.port_level[port])
            candidates.append(policy.mode)
        candidates.extend(p.mode for p in namespace_level[:1])
        candidates.extend(p.mode for p in mesh_level[:1])
        return next((m for m in candidates if m != "UNSET"), "PERMISSIVE")

    def sidecar_for(self, workload: Workload) -> Sidecar | None:
        """Istio's lookup: a Sidecar in the workload's namespace whose selector
        matches it, else that namespace's Sidecar without selector, else the
        root namespace's (the mesh default)."""
        local = [s for s in self.sidecars if s.namespace == workload.namespace]
        for sidecar in local:
            if sidecar.selector and selector_matches(sidecar.selector, workload.labels):
                return sidecar
        for sidecar in local:
            if not sidecar.selector:
                return sidecar
        for sidecar in self.sidecars:
            if sidecar.namespace == self.root_namespace and not sidecar.selector:
                return sidecar
        return None

    def outbound_mode(self, workload: Workload) -> OutboundMode:
        sidecar = self.sidecar_for(workload)
        if sidecar is not None and sidecar.outbound_mode:
            return sidecar.outbound_mode
        return self.settings.outbound_mode


# MeshConfig's fields that none of its cached properties reads, and those
# properties (see MeshConfig.with_fields; a test checks the first).
_NOT_INDEXED = frozenset({"objects", "diagnostics", "digest", "trust_domain"})
_INDEXES = frozenset(n for n, v in vars(MeshConfig).items() if isinstance(v, cached_property))
