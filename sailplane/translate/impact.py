"""What a configuration change touches: the input of incremental translation.

Istio computes, for every push, the set of configs that changed
(``ConfigsUpdated``) and decides from their kinds what to rebuild: an
endpoint change is an EDS-only push, a VirtualService change rebuilds routes,
anything it cannot scope is a full push. :func:`impact_of` does the same by
comparing two :class:`MeshConfig` values. Objects that did not change are
usually the *same* Python objects (the loader reuses them), so the
comparison costs a pointer check per object; otherwise it is an equality
check, never wrong, only slower.

The rules are conservative: an Impact may name more than really changed,
never less. ``tests/unit/test_incremental_translation.py`` checks that incremental
translation with these impacts equals a full translation, change by change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sailplane.memo import IdentityMemo
from sailplane.model.hosts import host_matches
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import Destination, VirtualService
from sailplane.model.registry import Service, Workload
from sailplane.translate.proxy import Capture, Proxy, Role

# MeshConfig fields followed object by object; any other field that differs
# (PeerAuthentication, AuthorizationPolicy, Sidecar, Telemetry, Gateway, mesh
# settings, and any field added later) makes the change a full one.
_TRACKED = frozenset({"services", "workloads", "virtual_services", "destination_rules"})
_NOT_CONFIG = frozenset({"objects", "diagnostics", "digest"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Impact:
    """What to rebuild after a change. Hosts are service FQDNs."""

    full: bool = False
    # Services whose clusters and ClusterLoadAssignments are rebuilt.
    services: frozenset[str] = frozenset()
    # Services whose outbound virtual hosts (in every route table) are rebuilt.
    routes: frozenset[str] = frozenset()
    # Proxies (workload ids) whose own resources (listeners, inbound clusters) are rebuilt.
    proxies: frozenset[str] = frozenset()
    # Gateway proxies are rebuilt whole (their routes draw on every kind above).
    gateways: bool = False

    @property
    def empty(self) -> bool:
        return not (self.full or self.services or self.routes or self.proxies or self.gateways)

    @property
    def kind(self) -> str:
        """The widest thing rebuilt: ``full``; ``routes`` (and maybe services);
        ``services`` (their clusters and endpoints: an EDS-only push when the
        clusters come out the same); ``proxies`` (some proxies' own
        resources only); ``none``."""
        if self.full:
            return "full"
        if self.routes or self.gateways:
            return "routes"
        if self.services:
            return "services"
        return "proxies" if self.proxies else "none"


FULL = Impact(full=True)


def impact_of(old: MeshConfig, new: MeshConfig) -> Impact:
    """The conservative impact of replacing ``old`` by ``new``."""
    if old is new:
        return Impact()
    for f in dataclasses.fields(MeshConfig):
        if f.name in _TRACKED or f.name in _NOT_CONFIG:
            continue
        if getattr(old, f.name) != getattr(new, f.name):
            return FULL

    services: set[str] = set()
    routes: set[str] = set()
    proxies: set[str] = set()

    # Services: their clusters, endpoints and virtual hosts; the workloads they
    # select (inbound ports); the routes of VirtualServices that send to them.
    changed_services = _changed(old.services_by_host, new.services_by_host)
    for before, after in changed_services:
        for service, mesh in ((before, old), (after, new)):
            if service is None:
                continue
            services.add(service.hostname)
            routes.add(service.hostname)
            for selected in _selected(mesh, service):
                proxies.add(selected.id)
                # The workload's mTLS mode may follow the services that select
                # it (PeerAuthentication targets), which shows in the
                # endpoints of its other services.
                for m in (old, new):
                    services.update(s.hostname for s in m.services_of(selected))

    # Workloads: the endpoints of the services that select them, and their own proxy.
    old_workloads, new_workloads = old.workloads_by_id, new.workloads_by_id
    for before_w, after_w in _changed(old_workloads, new_workloads):
        for workload, mesh in ((before_w, old), (after_w, new)):
            if workload is not None:
                proxies.add(workload.id)
                services.update(s.hostname for s in mesh.services_of(workload))

    # VirtualServices: the virtual hosts of every service their hosts match.
    changed_vs = _changed(_by_key(old.virtual_services), _by_key(new.virtual_services))
    gateways = bool(changed_services or changed_vs)
    for before_vs, after_vs in changed_vs:
        for vs in (before_vs, after_vs):
            if vs is not None:
                routes.update(_matching_services(old, new, vs.hosts))
    if old.source_label_selectors != new.source_label_selectors:
        return FULL  # proxies regroup into other route tables

    # DestinationRules: clusters and endpoints (subsets, policies) of the hosts
    # they match, and the routes that send there (consistent hash policies).
    changed_dr = _changed(_by_key(old.destination_rules), _by_key(new.destination_rules))
    gateways |= bool(changed_dr)
    dr_hosts: set[str] = set()
    for before_dr, after_dr in changed_dr:
        for rule in (before_dr, after_dr):
            if rule is not None:
                dr_hosts.update(_matching_services(old, new, (rule.host,)))
    services |= dr_hosts

    # Rules with a workloadSelector give the proxies they pick clusters of
    # their own (clusters.build_selected_clusters): those proxies rebuild.
    # (Also the services whose ports or policies may have changed: the routes
    # that send to them are rebuilt below.)
    changed_hosts = dr_hosts | {s.hostname for pair in changed_services for s in pair if s}
    for mesh in (old, new):
        proxies.update(_picked_by_selector_rules(mesh, changed_hosts))
        for pair in changed_dr:
            for rule in pair:
                if rule is not None and rule.workload_selector:
                    picked = mesh.selected_workloads(rule.namespace, rule.workload_selector)
                    proxies.update(w.id for w in picked)

    # Routes that send to a service whose ports or policies may have changed.
    if changed_hosts:
        routes.update(_routes_to(old, changed_hosts))
        routes.update(_routes_to(new, changed_hosts))

    return Impact(
        services=frozenset(services),
        routes=frozenset(routes),
        proxies=frozenset(proxies),
        gateways=gateways,
    )


def _picked_by_selector_rules(mesh: MeshConfig, hostnames: set[str]) -> set[str]:
    """The workloads a DestinationRule with a selector for one of ``hostnames`` picks."""
    if not mesh.services_with_selector_rules:
        return set()
    return {
        w.id
        for host in hostnames
        for rule in mesh.selector_rules_for(host)
        for w in mesh.selected_workloads(rule.namespace, rule.workload_selector)
    }


def _changed(old: Mapping[Any, _T], new: Mapping[Any, _T]) -> list[tuple[_T | None, _T | None]]:
    """(before, after) for every key whose object is not the same (or equal)."""
    out: list[tuple[_T | None, _T | None]] = []
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before is after or before == after:
            continue
        out.append((before, after))
    return out


def _by_key(objects: Iterable[_T]) -> dict[tuple[str, str], _T]:
    return {(o.namespace, o.name): o for o in objects}  # type: ignore[attr-defined]


def _selected(mesh: MeshConfig, service: Service) -> tuple[Workload, ...]:
    return mesh.selected_workloads(service.namespace, service.selector or {})


def _matching_services(old: MeshConfig, new: MeshConfig, patterns: Iterable[str]) -> set[str]:
    """Hostnames, in either mesh, that any of ``patterns`` matches."""
    out: set[str] = set()
    for pattern in patterns:
        if "*" not in pattern:
            out.add(pattern)
            continue
        matched = {h for m in (old, new) for h in m.services_by_host if host_matches(pattern, h)}
        # A wildcard no service matches has a virtual host of its own (vshosts.py).
        out.update(matched or (pattern,))
    return out


def _routes_to(mesh: MeshConfig, targets: set[str]) -> set[str]:
    """Hosts whose virtual hosts may send to any of ``targets``: the hosts of
    every VirtualService with a destination (or mirror) there."""
    out: set[str] = set()
    for vs in mesh.virtual_services:
        if not targets.isdisjoint(destination_hosts(vs)):
            out.update(_matching_services(mesh, mesh, vs.hosts))
    return out


# VirtualService -> its destination hosts, by identity. VirtualServices are
# immutable and usually outlive many loads; the memo holds each one it
# remembers, so its id is not reused meanwhile.
_DESTINATIONS: IdentityMemo[frozenset[str]] = IdentityMemo(100_000)


def destination_hosts(vs: VirtualService) -> frozenset[str]:
    """The host of every Destination anywhere in the VirtualService (routes,
    mirrors, and any field added later), found by walking its dataclasses."""
    found = _DESTINATIONS.get(vs)
    if found is not None:
        return found
    hosts: set[str] = set()
    stack: list[Any] = [vs]
    while stack:
        value = stack.pop()
        if isinstance(value, Destination):
            hosts.add(value.host)
        elif dataclasses.is_dataclass(value):
            stack.extend(getattr(value, f.name) for f in dataclasses.fields(value))
        elif isinstance(value, tuple | list):
            stack.extend(value)
    return _DESTINATIONS.put((vs,), frozenset(hosts))


def rebuilds_own(impact: Impact, node_id: str, proxy: Proxy) -> bool:
    """Whether a change reaches the proxy's own resources (its listeners,
    inbound clusters and inbound route configs; a gateway's routes too)."""
    if impact.full or node_id in impact.proxies:
        return True
    if proxy.role is Role.GATEWAY:
        return impact.gateways
    if proxy.proxyless:  # its API listeners and routes follow services and routes
        return impact.gateways or bool(impact.services or impact.routes)
    # A transparent sidecar's outbound listeners follow every service's ports
    # and addresses and the mesh's tcp/tls routes (transparent_outbound.py).
    return proxy.capture is Capture.TRANSPARENT and (impact.gateways or bool(impact.services))
