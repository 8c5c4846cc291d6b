"""Semantic checks that need the whole mesh and drop nothing.

What they find is legal but almost certainly not what the author meant: a
Gateway no workload runs, a gateway port the workload does not expose, a
route that can never match, two DestinationRules for one host. Each is a
warning at the offending field, with ``istioctl analyze``'s code where it
has one. (What *must* exist is checked in references.py and drops objects.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
from sailplane.model.registry import selector_matches
from sailplane.model.source import Diagnostic, FieldPath, Severity, Source, format_field_path


def _warn(source: Source, obj: str, path: FieldPath, message: str, code: str = "") -> Diagnostic:
    return Diagnostic(
        file=source.file,
        position=source.locate(path),
        message=message,
        obj=obj,
        field_path=format_field_path(path),
        severity=Severity.WARNING,
        code=code,
    )


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def check_gateway(mesh: MeshConfig, gateway: Gateway) -> list[Diagnostic]:
    obj = f"Gateway {gateway.key}"
    workloads = [
        w
        for w in mesh.workloads
        if gateway.selector and selector_matches(gateway.selector, w.labels)
    ]
    if not workloads:
        return [
            _warn(
                gateway.source,
                obj,
                ("spec", "selector"),
                f"referenced selector not found: no WorkloadEntry has labels "
                f"{_selector_text(gateway.selector)!r}, so no proxy serves this gateway",
                "IST0101",
            )
        ]
    problems = []
    for i, server in enumerate(gateway.servers):
        for workload in workloads:
            ports = workload.ports
            if not ports or server.port_name in ports or server.port in ports.values():
                continue
            exposed = ", ".join(f"{name}={number}" for name, number in sorted(ports.items()))
            problems.append(
                _warn(
                    gateway.source,
                    obj,
                    ("spec", "servers", i, "port"),
                    f"port {server.port} ({server.port_name or 'unnamed'}) is not exposed "
                    f"on workload {workload.namespace}/{workload.name} (its ports: {exposed})",
                    "IST0104",
                )
            )
            break
    return problems


def check_route_order(vs: VirtualService) -> list[Diagnostic]:
    """Rules after a match-all rule, and matches that repeat an earlier one,
    never see a request (Envoy takes the first route that matches)."""
    obj = f"VirtualService {vs.key}"
    problems = []
    seen: list[tuple[object, tuple[int, int]]] = []  # matches hold dicts: not hashable
    catch_all: int | None = None
    for i, route in enumerate(vs.http):
        path: FieldPath = ("spec", "http", i)
        if catch_all is not None:
            problems.append(
                _warn(
                    vs.source,
                    obj,
                    path,
                    f"rule #{i} is not used: rule #{catch_all} has no match and takes every "
                    "request (only the last rule can have no matches)",
                    "IST0130",
                )
            )
            continue
        if not route.match:
            catch_all = i
            continue
        for j, match in enumerate(route.match):
            key = dataclasses.replace(match, name="")
            first = next((where for m, where in seen if m == key), None)
            if first is not None:
                problems.append(
                    _warn(
                        vs.source,
                        obj,
                        (*path, "match", j),
                        f"rule #{i} match #{j} is not used (duplicates a match in rule "
                        f"#{first[0]} match #{first[1]})",
                        "IST0131",
                    )
                )
            else:
                seen.append((key, (i, j)))
    return problems


def check_destination_rules(mesh: MeshConfig) -> list[Diagnostic]:
    problems = []
    owner: dict[str, DestinationRule] = {}
    for rule in mesh.destination_rules:
        obj = f"DestinationRule {rule.key}"
        first = owner.setdefault(rule.host, rule)
        if first is not rule:
            problems.append(
                _warn(
                    rule.source,
                    obj,
                    ("spec", "host"),
                    f"host {rule.host!r} is also configured by DestinationRule {first.key}, "
                    "which takes precedence; this rule is not used",
                )
            )
        elif "*" not in rule.host and rule.host not in mesh.services_by_host:
            problems.append(
                _warn(
                    rule.source,
                    obj,
                    ("spec", "host"),
                    f"no Service or ServiceEntry defines host {rule.host!r}; "
                    "this rule applies to nothing",
                    "IST0101",
                )
            )
    return problems


def check_mesh(mesh: MeshConfig) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    for gateway in mesh.gateways:
        problems.extend(check_gateway(mesh, gateway))
    for vs in mesh.virtual_services:
        problems.extend(check_route_order(vs))
    problems.extend(check_destination_rules(mesh))
    return problems
