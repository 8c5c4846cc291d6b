"""Cross-object checks: what a VirtualService names should exist.

Run once every object is parsed (file order does not matter). As in Istio,
whose validation webhook checks one object at a time, a VirtualService that
names an unknown host, port, subset or gateway is accepted: these are
``istioctl analyze`` warnings (IST0101), and at run time a request routed
to a cluster that does not exist gets Envoy's 503 (route.go builds the
cluster name ``outbound|PORT|SUBSET|HOST`` whether or not the service or
subset exists; RDS does not validate clusters). Errors here would drop the
object (or fall back to its last good version); none of today's checks is one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sailplane.model.hosts import host_matches
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import Destination, TCPRoute, TLSRoute, VirtualService
from sailplane.model.source import (
    Diagnostic,
    FieldPath,
    Severity,
    format_field_path,
)

Dropped = set[tuple[str, str, str]]


def _diag(
    vs: VirtualService,
    path: FieldPath,
    message: str,
    code: str,
    severity: Severity = Severity.WARNING,
) -> Diagnostic:
    return Diagnostic(
        file=vs.source.file,
        position=vs.source.locate(path),
        message=message,
        obj=f"VirtualService {vs.namespace}/{vs.name}",
        field_path=format_field_path(path),
        severity=severity,
        code=code,
    )


def _check_destination(
    mesh: MeshConfig, vs: VirtualService, dest: Destination, path: FieldPath
) -> list[Diagnostic]:
    service = mesh.services_by_host.get(dest.host)
    if service is None:
        shown = f"{dest.written!r} ({dest.host})" if dest.written != dest.host else repr(dest.host)
        return [
            _diag(
                vs,
                (*path, "host"),
                f"unknown host {shown}: no Service or ServiceEntry defines it "
                "(requests routed there get 503)",
                "IST0101",
            )
        ]
    problems = []
    if dest.port is not None and dest.port not in {p.number for p in service.ports}:
        ports = ", ".join(str(p.number) for p in service.ports)
        problems.append(
            _diag(
                vs,
                (*path, "port", "number"),
                f"{dest.host} has no port {dest.port} (ports: {ports}; "
                "requests routed there get 503)",
                "IST0101",
            )
        )
    if dest.subset:
        rule = mesh.destination_rule_for(dest.host)
        if rule is None or rule.subset(dest.subset) is None:
            where = (
                f"DestinationRule {rule.key} does not define it"
                if rule
                else "no DestinationRule defines subsets for it"
            )
            selected = [r for r in mesh.selector_rules_for(dest.host) if r.subset(dest.subset)]
            if selected:
                where = (
                    f"only DestinationRule {selected[0].key}, with a workloadSelector, "
                    "defines it, for the proxies it selects"
                )
            problems.append(
                _diag(
                    vs,
                    (*path, "subset"),
                    f"unknown subset {dest.subset!r} of {dest.host}: {where} "
                    "(requests routed there get 503)",
                    "IST0101",
                )
            )
    return problems


def check_virtual_service(mesh: MeshConfig, vs: VirtualService) -> list[Diagnostic]:
    problems = []
    for i, gateway in enumerate(vs.gateways):
        if gateway != "mesh" and gateway not in mesh.gateways_by_key:
            problems.append(
                _diag(
                    vs,
                    ("spec", "gateways", i),
                    f"unknown gateway {gateway!r}: this VirtualService applies to no "
                    "gateway of that name until one is defined",
                    "IST0101",
                )
            )
    for route in vs.http:
        for target in route.route:
            problems.extend(
                _check_destination(mesh, vs, target.destination, (*target.path, "destination"))
            )
        if route.mirror is not None:
            problems.extend(_check_destination(mesh, vs, route.mirror, (*route.path, "mirror")))
        for mirror in route.mirrors:
            where = (*mirror.path, "destination")
            problems.extend(_check_destination(mesh, vs, mirror.destination, where))
    l4: list[TCPRoute | TLSRoute] = [*vs.tcp, *vs.tls]
    for tcp in l4:
        for target in tcp.route:
            problems.extend(
                _check_destination(mesh, vs, target.destination, (*target.path, "destination"))
            )
    return problems


def _conflicts(mesh: MeshConfig, kept: list[VirtualService]) -> list[Diagnostic]:
    """Two mesh VirtualServices for one host: Istio uses one (IST0109)."""
    owner: dict[str, VirtualService] = {}
    problems = []
    for vs in kept:
        if "mesh" not in vs.gateways:
            continue
        for i, host in enumerate(vs.hosts):
            first = owner.setdefault(host, vs)
            if first is not vs:
                problems.append(
                    _diag(
                        vs,
                        ("spec", "hosts", i),
                        f"host {host!r} is also routed by VirtualService "
                        f"{first.key}, which takes precedence",
                        "IST0109",
                        Severity.WARNING,
                    )
                )
    return problems


def check_references(
    mesh: MeshConfig, fallback: Mapping[str, VirtualService] | None = None
) -> tuple[MeshConfig, Dropped, Dropped, list[Diagnostic]]:
    """Check every VirtualService; drop those with errors (none today, see above).

    ``fallback`` maps ``namespace/name`` to the version in force before; a
    dropped VirtualService whose previous version still checks out is
    replaced by it. Returns the mesh, the keys dropped, the keys that fell
    back, and the problems (of the new versions only)."""
    problems: list[Diagnostic] = []
    dropped: Dropped = set()
    retained: Dropped = set()
    kept = []
    for vs in mesh.virtual_services:
        found = check_virtual_service(mesh, vs)
        problems.extend(found)
        if not any(d.severity is Severity.ERROR for d in found):
            kept.append(vs)
            continue
        key = ("VirtualService", vs.namespace, vs.name)
        old = (fallback or {}).get(vs.key)
        if old is not None and not any(
            d.severity is Severity.ERROR for d in check_virtual_service(mesh, old)
        ):
            kept.append(old)
            retained.add(key)
        else:
            dropped.add(key)
    problems.extend(_conflicts(mesh, kept))
    _ = host_matches  # wildcard hosts are matched at translation time
    return dataclasses.replace(mesh, virtual_services=tuple(kept)), dropped, retained, problems
