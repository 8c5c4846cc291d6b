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

from sailplane.config.secret import check_client_credentials
from sailplane.model.credentials import missing_credentials
from sailplane.model.destinationrules import duplicate_subsets, merge_rule, rule_order
from sailplane.model.gatewayports import exposed, gateway_port
from sailplane.model.hosts import is_ip_address
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
from sailplane.model.registry import Protocol, Service, Workload, selector_matches
from sailplane.model.source import Diagnostic, FieldPath, Severity, Source, format_field_path

# Routed by Host (HTTP, sniffed as such) or by SNI (TLS), not by address.
_NOT_BY_ADDRESS = (Protocol.UNKNOWN, Protocol.TLS, Protocol.HTTPS)


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
            found = gateway_port(mesh, workload, server)
            if exposed(workload, found):
                continue
            ports = ", ".join(f"{n}={p}" for n, p in sorted(workload.ports.items()))
            problems.append(
                _warn(
                    gateway.source,
                    obj,
                    ("spec", "servers", i, "port"),
                    f"port {server.port} ({server.port_name or 'unnamed'}) is not exposed "
                    f"on workload {workload.namespace}/{workload.name} (its ports: {ports})",
                    "IST0104",
                )
            )
            break
        problems.extend(_credential_problems(mesh, gateway, i, workloads))
    return problems


def _credential_problems(
    mesh: MeshConfig, gateway: Gateway, index: int, workloads: list[Workload]
) -> list[Diagnostic]:
    """A credentialName whose Secret a gateway workload cannot read: Istio
    never serves that server's certificate; sailplane leaves the server's
    filter chain out (the other servers keep working)."""
    tls = gateway.servers[index].tls
    if tls is None:
        return []
    for namespace in sorted({w.namespace for w in workloads}):
        missing = missing_credentials(mesh.secrets, namespace, tls)
        if missing:
            return [
                _warn(
                    gateway.source,
                    f"Gateway {gateway.key}",
                    ("spec", "servers", index, "tls", "credentialName"),
                    f"credentialName {tls.credential_name!r} cannot be served to the gateway "
                    f"workloads of namespace {namespace}: {missing}; this server is not served",
                    "IST0101",
                )
            ]
    return []


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
    """What merging rules for one host drops or overrides (see
    model/destinationrules.py for Istio's merge), and rules for no host."""
    problems = []
    first_of: dict[tuple[str, str, str], DestinationRule] = {}  # (host, ns, selector) -> rule
    used_namespace: dict[str, str] = {}  # host -> the namespace whose rules every proxy uses
    for rule in sorted(mesh.destination_rules, key=rule_order):
        obj = f"DestinationRule {rule.key}"
        selector = _selector_text(rule.workload_selector)
        key = (rule.host, rule.namespace, selector)
        first = first_of.setdefault(key, rule)
        if not selector:
            used = used_namespace.setdefault(rule.host, _shared_namespace(mesh, rule.host))
            if used != rule.namespace:
                problems.append(
                    _warn(
                        rule.source,
                        obj,
                        ("spec", "host"),
                        f"host {rule.host!r} is also configured by DestinationRules in "
                        f"namespace {used!r}, which every proxy uses (sailplane's clusters are "
                        "shared by the mesh; Istio would use this rule for proxies of "
                        f"namespace {rule.namespace!r}); this rule is not used",
                    )
                )
                continue
        if first is not rule:
            problems.extend(_merge_notes(first, rule))
            first_of[key] = merge_rule(first, rule)  # what the next rule merges into
        if "*" not in rule.host and rule.host not in mesh.services_by_host and first is rule:
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


def _shared_namespace(mesh: MeshConfig, host: str) -> str:
    rule = mesh.destination_rule_for(host)
    return rule.namespace if rule is not None and rule.host == host else ""


def _merge_notes(first: DestinationRule, rule: DestinationRule) -> list[Diagnostic]:
    """``rule`` is merged into ``first`` (Istio's mergeDestinationRule)."""
    obj = f"DestinationRule {rule.key}"
    notes = [
        Diagnostic(
            file=rule.source.file,
            position=rule.source.locate(("spec", "host")),
            message=f"merged into DestinationRule {first.key} (written first), as Istio "
            "merges the rules of one host: its subsets are added",
            obj=obj,
            field_path="spec.host",
            severity=Severity.INFO,
        )
    ]
    for name in duplicate_subsets(first, rule):
        index = next(i for i, s in enumerate(rule.subsets) if s.name == name)
        notes.append(
            _warn(
                rule.source,
                obj,
                ("spec", "subsets", index, "name"),
                f"subset {name!r} is also defined by DestinationRule {first.key}, "
                "whose definition is used; this one is not",
            )
        )
    if rule.traffic_policy is not None and first.traffic_policy is not None:
        notes.append(
            _warn(
                rule.source,
                obj,
                ("spec", "trafficPolicy"),
                f"DestinationRule {first.key} (written first) has a trafficPolicy for "
                f"{rule.host!r}, which is used; this one is not",
            )
        )
    return notes


def check_shared_tcp_ports(mesh: MeshConfig) -> list[Diagnostic]:
    """TCP services on one port that no address tells apart: a transparent
    sidecar sends that port's connections to the first (hostname order), as
    Istio keeps the listener it had (translate/transparent_outbound.py
    matches by ServiceEntry addresses, else instance IP addresses)."""
    first: dict[int, Service] = {}
    notes = []
    for service in sorted(mesh.services, key=lambda s: s.hostname):
        if service.addresses or any(is_ip_address(e.address) for e in mesh.endpoints_of(service)):
            continue
        for index, port in enumerate(service.ports):
            if port.protocol.is_http or port.protocol in _NOT_BY_ADDRESS:
                continue
            taken = first.setdefault(port.number, service)
            if taken is service:
                continue
            notes.append(
                Diagnostic(
                    file=service.source.file,
                    position=service.source.locate(("spec", "ports", index)),
                    message=f"port {port.number} is also {taken.hostname}'s, and no address "
                    "tells them apart: a transparent sidecar sends its connections to "
                    f"{taken.hostname} (give spec.addresses to route by destination)",
                    obj=f"{service.kind} {service.namespace}/{service.name}",
                    field_path=f"spec.ports[{index}]",
                    severity=Severity.INFO,
                )
            )
    return notes


def check_mesh(mesh: MeshConfig) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    for gateway in mesh.gateways:
        problems.extend(check_gateway(mesh, gateway))
    for vs in mesh.virtual_services:
        problems.extend(check_route_order(vs))
    problems.extend(check_destination_rules(mesh))
    problems.extend(check_client_credentials(mesh))
    problems.extend(check_shared_tcp_ports(mesh))
    return problems
