"""Reading ``name.namespace`` hosts once the whole mesh is known.

Istio takes every dotted host as written (model.ResolveShortnameToFQDN), so
``reviews.prod`` is a host named ``reviews.prod``, not the Service
``reviews.prod.svc.cluster.local``. sailplane keeps one exception, for the
talk's ``host: weather-backend.secure``: a ``name.ns`` or ``name.ns.svc``
whose ``ns`` is a namespace of the mesh, and that no ServiceEntry declares
as written, means ``name.ns.svc.DOMAIN`` (hosts.namespace_shorthand). Every
such use is reported (info), naming the FQDN that works in Istio too.

This needs every document (which namespaces exist, which hosts are
declared), so it runs in assemble.py after the objects are collected,
keeping the parsers pure functions of their document. Objects it does not
change are returned as they are, so the translator still finds them
unchanged by identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Container, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sailplane.model.hosts import namespace_shorthand
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import (
    Destination,
    DestinationRule,
    HTTPRoute,
    RouteDestination,
    TCPRoute,
    TLSRoute,
    VirtualService,
)
from sailplane.model.source import Diagnostic, FieldPath, Severity, Source, format_field_path

L4Route = TypeVar("L4Route", TCPRoute, TLSRoute)


@dataclass(frozen=True, slots=True)
class HostContext:
    """What reading a ``name.ns`` host needs from the whole mesh."""

    namespaces: frozenset[str]  # every namespace an object of the mesh lives in
    declared: Container[str]  # every host a Service or ServiceEntry declares as written
    domain_suffix: str


def mesh_namespaces(mesh: MeshConfig) -> frozenset[str]:
    """The namespaces some Service, ServiceEntry, WorkloadEntry or config object lives in."""
    objects: Iterable[Collection[object]] = (
        mesh.services,
        mesh.workloads,
        mesh.virtual_services,
        mesh.destination_rules,
        mesh.gateways,
        mesh.peer_authentications,
        mesh.authorization_policies,
        mesh.request_authentications,
        mesh.sidecars,
        mesh.telemetries,
    )
    return frozenset(str(getattr(o, "namespace", "")) for group in objects for o in group) - {""}


def host_context(mesh: MeshConfig) -> HostContext:
    return HostContext(mesh_namespaces(mesh), mesh.services_by_host, mesh.domain_suffix)


class _Reader:
    """Rewrites one object's hosts, collecting an info diagnostic per use."""

    def __init__(self, context: HostContext, source: Source, obj: str) -> None:
        self.context = context
        self.source = source
        self.obj = obj
        self.notes: list[Diagnostic] = []

    def host(self, host: str, path: FieldPath) -> str:
        if host in self.context.declared:
            return host
        fqdn = namespace_shorthand(host, self.context.namespaces, self.context.domain_suffix)
        if fqdn is None:
            return host
        self.notes.append(
            Diagnostic(
                file=self.source.file,
                position=self.source.locate(path),
                message=(
                    f"host {host!r} is read as {fqdn!r} (its namespace is in the mesh); "
                    f"Istio reads a dotted host literally: write {fqdn!r} to mean the same there"
                ),
                obj=self.obj,
                field_path=format_field_path(path),
                severity=Severity.INFO,
            )
        )
        return fqdn

    def destination(self, dest: Destination, path: FieldPath) -> Destination:
        host = self.host(dest.host, (*path, "host"))
        if host == dest.host:
            return dest
        return dataclasses.replace(dest, host=host, written=dest.written or dest.host)

    def targets(self, targets: tuple[RouteDestination, ...]) -> tuple[RouteDestination, ...]:
        out = tuple(
            dataclasses.replace(t, destination=d)
            if (d := self.destination(t.destination, (*t.path, "destination"))) is not t.destination
            else t
            for t in targets
        )
        return targets if all(a is b for a, b in zip(out, targets, strict=True)) else out

    def http(self, route: HTTPRoute) -> HTTPRoute:
        targets = self.targets(route.route)
        mirror = route.mirror
        if mirror is not None:
            mirror = self.destination(mirror, (*route.path, "mirror"))
        mirrors = tuple(
            dataclasses.replace(m, destination=d)
            if (d := self.destination(m.destination, (*m.path, "destination"))) is not m.destination
            else m
            for m in route.mirrors
        )
        if all(a is b for a, b in zip(mirrors, route.mirrors, strict=True)):
            mirrors = route.mirrors
        if targets is route.route and mirror is route.mirror and mirrors is route.mirrors:
            return route
        return dataclasses.replace(route, route=targets, mirror=mirror, mirrors=mirrors)

    def l4(self, route: L4Route) -> L4Route:
        """A TCP or TLS route (both are match + weighted destinations)."""
        targets = self.targets(route.route)
        return route if targets is route.route else dataclasses.replace(route, route=targets)


def read_virtual_service(
    vs: VirtualService, context: HostContext
) -> tuple[VirtualService, list[Diagnostic]]:
    """``vs`` with its ``name.ns`` hosts read (itself if none is), and the notes."""
    reader = _Reader(context, vs.source, f"VirtualService {vs.namespace}/{vs.name}")
    hosts = tuple(reader.host(h, ("spec", "hosts", i)) for i, h in enumerate(vs.hosts))
    http = tuple(reader.http(r) for r in vs.http)
    tcp = tuple(reader.l4(r) for r in vs.tcp)
    tls = tuple(reader.l4(r) for r in vs.tls)
    if not reader.notes:
        return vs, []
    return dataclasses.replace(vs, hosts=hosts, http=http, tcp=tcp, tls=tls), reader.notes


def read_destination_rule(
    rule: DestinationRule, context: HostContext
) -> tuple[DestinationRule, list[Diagnostic]]:
    reader = _Reader(context, rule.source, f"DestinationRule {rule.namespace}/{rule.name}")
    host = reader.host(rule.host, ("spec", "host"))
    if host == rule.host:
        return rule, []
    return dataclasses.replace(rule, host=host), reader.notes


# The last load's reads, by object identity, with what they were read
# against: (namespaces, declared hosts, domain suffix). The incremental loader
# hands unchanged objects on as the same objects, so at 1,000 services a
# reload reads again only what changed. A load thread and the loop (views)
# may both load: the tuple is replaced whole, never changed in place.
_Read = tuple[object, tuple[object, list[Diagnostic]]]
_LAST: tuple[tuple[frozenset[str], frozenset[str], str], dict[int, _Read]] | None = None

T = TypeVar("T", VirtualService, DestinationRule)


def read_namespace_hosts(mesh: MeshConfig) -> tuple[MeshConfig, list[Diagnostic]]:
    """The mesh with every VirtualService's and DestinationRule's ``name.ns``
    hosts read (see the module's docstring), and a note for each."""
    global _LAST
    context = host_context(mesh)
    key = (context.namespaces, frozenset(mesh.services_by_host), mesh.domain_suffix)
    last = _LAST
    known = last[1] if last is not None and last[0] == key else {}
    reads: dict[int, _Read] = {}
    notes: list[Diagnostic] = []

    def read(obj: T, reader: Callable[[T, HostContext], tuple[T, list[Diagnostic]]]) -> T:
        found = known.get(id(obj))
        result = found[1] if found is not None and found[0] is obj else reader(obj, context)
        reads[id(obj)] = (obj, result)
        new, found_notes = result
        notes.extend(found_notes)
        return new  # type: ignore[return-value]

    services = [read(vs, read_virtual_service) for vs in mesh.virtual_services]
    rules = [read(rule, read_destination_rule) for rule in mesh.destination_rules]
    _LAST = (key, reads)
    if not notes:
        return mesh, []
    return (
        dataclasses.replace(mesh, virtual_services=tuple(services), destination_rules=tuple(rules)),
        notes,
    )
