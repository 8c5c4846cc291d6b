"""Parse the registry kinds: Kubernetes Service, ServiceEntry, WorkloadEntry."""

from __future__ import annotations

import ipaddress

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, did_you_mean, regex_problem
from sailplane.model.hosts import is_ip_address, resolve_host
from sailplane.model.registry import (
    Endpoint,
    Location,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    StatsInclusion,
    Workload,
    workload_locality,
)
from sailplane.model.source import Severity


def parse_service(r: ObjectReader, domain_suffix: str) -> Service | None:
    """Kubernetes ``v1 Service``: ports + selector (the instances are WorkloadEntries)."""
    check_declared_fields(r)
    ports = []
    for i, _ in enumerate(r.sequence(("spec", "ports"), required=True)):
        base = ("spec", "ports", i)
        number = r.port((*base, "port"), required=True)
        name = r.string((*base, "name")) or ""
        target = r.raw((*base, "targetPort"))
        target_port = r.port((*base, "targetPort")) if isinstance(target, int) else None
        if isinstance(target, str):
            r.report(
                (*base, "targetPort"),
                "named target ports are not supported; use a number",
                Severity.WARNING,
            )
        app_protocol = r.string((*base, "appProtocol"))
        protocol = Protocol.from_port(app_protocol or r.string((*base, "protocol")), name)
        if number is not None:
            ports.append(ServicePort(number, name, protocol, target_port))
    if not r.name:
        r.report(("metadata", "name"), "required field is missing", code="IST0106")
    if r.failed or not ports:
        return None
    return Service(
        hostname=f"{r.name}.{r.namespace}.svc.{domain_suffix}",
        namespace=r.namespace,
        name=r.name,
        kind="Service",
        ports=tuple(ports),
        source=r.source,
        selector=r.labels(("spec", "selector")) or None,
    )


def _parse_se_ports(r: ObjectReader) -> list[ServicePort]:
    ports = []
    for i, _ in enumerate(r.sequence(("spec", "ports"))):
        base = ("spec", "ports", i)
        number = r.port((*base, "number"), required=True)
        name = r.string((*base, "name"), required=True) or ""
        protocol = Protocol.from_port(r.string((*base, "protocol")), name)
        target_port = r.port((*base, "targetPort"))
        if number is not None:
            ports.append(ServicePort(number, name, protocol, target_port))
    return ports


def _addresses(r: ObjectReader) -> tuple[str, ...]:
    """``addresses``: IP addresses or CIDR blocks (Istio's ValidateIPSubnet)."""
    out = []
    for i, raw in enumerate(r.sequence(("spec", "addresses"))):
        try:
            ipaddress.ip_network(str(raw), strict=False)
        except ValueError:
            r.report(
                ("spec", "addresses", i),
                f"{raw!r} is not an IP address or CIDR block",
                code="IST0106",
            )
            continue
        out.append(str(raw))
    return tuple(out)


def parse_service_entry(r: ObjectReader, domain_suffix: str) -> list[Service]:
    """``ServiceEntry``: one Service per host (istio.io/latest/docs/reference/config/
    networking/service-entry). Endpoints are inline, or WorkloadEntries picked by
    ``workloadSelector``."""
    check_declared_fields(r)
    hosts = [
        host
        for i, _ in enumerate(r.sequence(("spec", "hosts"), required=True))
        if (host := r.host(("spec", "hosts", i))) is not None
    ]
    ports = _parse_se_ports(r)
    location = Location(
        r.enum(("spec", "location"), tuple(m.value for m in Location), Location.MESH_EXTERNAL.value)
    )
    resolution = Resolution(
        r.enum(("spec", "resolution"), tuple(m.value for m in Resolution), Resolution.NONE.value)
    )
    selector = r.labels(("spec", "workloadSelector", "labels")) or None
    endpoints = []
    for i, _ in enumerate(r.sequence(("spec", "endpoints"))):
        base = ("spec", "endpoints", i)
        address = r.string((*base, "address"), required=True)
        if address is None:
            continue
        if resolution is Resolution.STATIC and not is_ip_address(address):
            r.report(
                (*base, "address"),
                f"{address!r} is not an IP address, as resolution STATIC requires",
                code="IST0106",
            )
            continue
        port_map: dict[str, int] = {}
        for key in r.mapping((*base, "ports")) or {}:
            port = r.port((*base, "ports", key))
            if port is not None:
                port_map[key] = port
        labels = r.labels((*base, "labels"))
        endpoints.append(
            Endpoint(
                address=address,
                labels=labels,
                ports=port_map,
                weight=r.integer((*base, "weight")) or 1,
                service_account=r.string((*base, "serviceAccount")) or "",
                locality=workload_locality(r.string((*base, "locality")) or "", labels),
            )
        )
    if not ports:
        r.report(("spec", "ports"), "a ServiceEntry needs at least one port", code="IST0106")
    if r.failed:
        return []
    export_to = tuple(str(x) for x in r.sequence(("spec", "exportTo"))) or ("*",)
    return [
        Service(
            hostname=resolve_host(host, r.namespace, domain_suffix),
            namespace=r.namespace,
            name=r.name,
            kind="ServiceEntry",
            ports=tuple(ports),
            source=r.source,
            selector=selector,
            endpoints=tuple(endpoints),
            location=location,
            resolution=resolution,
            addresses=_addresses(r),
            export_to=export_to,
        )
        for host in hosts
    ]


def parse_workload_entry(r: ObjectReader) -> Workload | None:
    """``WorkloadEntry``: one instance (a VM, a container, a process) and its proxy."""
    check_declared_fields(r)
    address = r.string(("spec", "address"), required=True)
    ports: dict[str, int] = {}
    for key in r.mapping(("spec", "ports")) or {}:
        port = r.port(("spec", "ports", key))
        if port is not None:
            ports[key] = port
    if not r.name:
        r.report(("metadata", "name"), "required field is missing", code="IST0106")
    interception = _interception_mode(r)
    stats = _stats_inclusion(r, address or "")
    if r.failed or address is None:
        return None
    labels = r.labels(("spec", "labels"))
    return Workload(
        name=r.name,
        namespace=r.namespace,
        address=address,
        source=r.source,
        labels=labels,
        ports=ports,
        service_account=r.string(("spec", "serviceAccount")) or "default",
        weight=r.integer(("spec", "weight")) or 1,
        locality=workload_locality(r.string(("spec", "locality")) or "", labels),
        interception_mode=interception,
        stats_inclusion=stats,
    )


STATS_INCLUSION_ANNOTATIONS = {
    kind: f"sidecar.istio.io/statsInclusion{kind}" for kind in ("Prefixes", "Suffixes", "Regexps")
}
# A pattern list long enough to be a mistake (every proxy evaluates each
# pattern for each of its stat names).
MAX_STATS_PATTERNS = 64


def _stats_inclusion(r: ObjectReader, address: str) -> StatsInclusion:
    """Istio's ``sidecar.istio.io/statsInclusion{Prefixes,Suffixes,Regexps}``:
    comma-separated patterns of extra Envoy stats for this workload's proxy,
    ``{pod_ip}`` standing for the workload's address, as Istio's bootstrap
    substitutes it."""
    found: dict[str, tuple[str, ...]] = {}
    for kind, annotation in STATS_INCLUSION_ANNOTATIONS.items():
        path = ("metadata", "annotations", annotation)
        value = r.string(path) if r.has(path) else None
        if not value:
            continue
        patterns = [p.strip().replace("{pod_ip}", address) for p in value.split(",")]
        patterns = [p for p in patterns if p]
        if len(patterns) > MAX_STATS_PATTERNS:
            r.report(path, f"{len(patterns)} patterns: at most {MAX_STATS_PATTERNS}")
            continue
        if kind == "Regexps":
            problems = [(p, regex_problem(p)) for p in patterns]
            bad = [f"{p!r}: {problem}" for p, problem in problems if problem]
            if bad:
                r.report(path, f"invalid regex {bad[0]}", code="IST0106")
                continue
        found[kind] = tuple(patterns)
    return StatsInclusion(
        prefixes=found.get("Prefixes", ()),
        suffixes=found.get("Suffixes", ()),
        regexps=found.get("Regexps", ()),
    )


INTERCEPTION_ANNOTATION = "sidecar.istio.io/interceptionMode"
INTERCEPTION_MODES = ("REDIRECT", "NONE")


def _interception_mode(r: ObjectReader) -> str:
    """The WorkloadEntry's capture mode annotation: REDIRECT (transparent,
    iptables) or NONE (the app uses the sidecar as its HTTP proxy); Istio's
    TPROXY is refused (not supported), as is any other value."""
    path = ("metadata", "annotations", INTERCEPTION_ANNOTATION)
    if not r.has(path):
        return ""
    value = r.string(path)
    if value is None or value in INTERCEPTION_MODES:
        return value or ""
    if value == "TPROXY":
        r.report(path, "interception mode TPROXY is not supported: use REDIRECT or NONE")
    else:
        r.report(
            path,
            f"unknown interception mode {value!r}: use REDIRECT (transparent capture) "
            f"or NONE (HTTP proxy){did_you_mean(value, INTERCEPTION_MODES)}",
        )
    return ""
