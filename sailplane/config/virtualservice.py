"""Parse ``VirtualService`` (istio.io/latest/docs/reference/config/networking/virtual-service)."""

from __future__ import annotations

import ipaddress
from typing import Any

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, did_you_mean
from sailplane.model.hosts import host_matches, resolve_host
from sailplane.model.networking import (
    CorsPolicy,
    Destination,
    DirectResponse,
    Fault,
    FaultAbort,
    FaultDelay,
    HeaderMatch,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    L4Match,
    Mirror,
    Redirect,
    Retries,
    Rewrite,
    RouteDestination,
    StringMatch,
    TCPRoute,
    TLSMatch,
    TLSRoute,
    VirtualService,
)
from sailplane.model.source import FieldPath, Severity

_REDIRECT_CODES = (301, 302, 303, 307, 308)


def resolve_gateway(name: str, namespace: str) -> str:
    """``mesh`` stays; ``gw`` -> ``ns/gw``; ``ns/gw`` as is (Istio: "gateway names
    are resolved in the VirtualService's namespace unless qualified")."""
    if name == "mesh" or "/" in name:
        return name
    if "." in name:  # legacy "gw.ns" form
        gw, _, ns = name.partition(".")
        return f"{ns}/{gw}"
    return f"{namespace}/{name}"


def string_match(r: ObjectReader, path: FieldPath) -> StringMatch | None:
    raw = r.mapping(path)
    if raw is None:
        return None
    kinds = [k for k in ("exact", "prefix", "regex") if k in raw]
    if len(kinds) != 1:
        r.report(path, "a StringMatch needs exactly one of exact, prefix, regex", code="IST0106")
        return None
    kind = kinds[0]
    value = r.regex((*path, kind)) if kind == "regex" else r.string((*path, kind))
    return None if value is None else StringMatch(kind, value)


def _header_matches(r: ObjectReader, path: FieldPath, invert: bool) -> list[HeaderMatch]:
    out = []
    for name in r.mapping(path) or {}:
        sub = (*path, name)
        raw = r.mapping(sub)
        # An empty match ({}) means "present" (Istio >= 1.x).
        match = string_match(r, sub) if raw else None
        if raw and match is None:
            continue
        out.append(HeaderMatch(str(name).lower(), match, invert))
    return out


def _http_match(r: ObjectReader, path: FieldPath, vs_ns: str) -> HTTPMatch | None:
    query = []
    for name in r.mapping((*path, "queryParams")) or {}:
        sub = (*path, "queryParams", name)
        query.append((str(name), string_match(r, sub) if r.mapping(sub) else None))
    return HTTPMatch(
        name=r.string((*path, "name")) or "",
        uri=string_match(r, (*path, "uri")),
        scheme=string_match(r, (*path, "scheme")),
        method=string_match(r, (*path, "method")),
        authority=string_match(r, (*path, "authority")),
        headers=tuple(
            _header_matches(r, (*path, "headers"), False)
            + _header_matches(r, (*path, "withoutHeaders"), True)
        ),
        query_params=tuple(query),
        ignore_uri_case=bool(r.boolean((*path, "ignoreUriCase"))),
        port=r.port((*path, "port")),
        source_labels=r.labels((*path, "sourceLabels")),
        source_namespace=r.string((*path, "sourceNamespace")) or "",
        gateways=tuple(resolve_gateway(str(g), vs_ns) for g in r.sequence((*path, "gateways"))),
    )


def _destination(r: ObjectReader, path: FieldPath, domain: str) -> Destination | None:
    host = r.host((*path, "host"), required=True)
    if host is None:
        return None
    return Destination(
        host=resolve_host(host, r.namespace, domain),
        written=host,
        subset=r.string((*path, "subset")) or "",
        port=r.port((*path, "port", "number")),
    )


def _header_ops(r: ObjectReader, path: FieldPath) -> HeaderOperations:
    return HeaderOperations(
        set=r.labels((*path, "set")),
        add=r.labels((*path, "add")),
        remove=tuple(str(x) for x in r.sequence((*path, "remove"))),
    )


def _headers(r: ObjectReader, path: FieldPath) -> Headers:
    return Headers(_header_ops(r, (*path, "request")), _header_ops(r, (*path, "response")))


def _route_destinations(r: ObjectReader, path: FieldPath, domain: str) -> list[RouteDestination]:
    out = []
    items = r.sequence(path)
    for i, _ in enumerate(items):
        sub = (*path, i)
        destination = _destination(r, (*sub, "destination"), domain)
        if not r.has((*sub, "destination")):
            r.report((*sub, "destination"), "required field is missing", code="IST0106")
        weight = r.integer((*sub, "weight"))
        if weight is not None and weight < 0:
            r.report((*sub, "weight"), "weight must not be negative", code="IST0106")
        if destination is not None:
            out.append(
                RouteDestination(destination, weight or 0, _headers(r, (*sub, "headers")), sub)
            )
    weights = [d.weight for d in out]
    if len(out) > 1 or any(weights):
        total = sum(weights)
        if len(out) > 1 and total != 100:
            r.report(path, f"weights sum to {total}, not 100", code="IST0106")
    return out


# gRPC's status codes by name (grpc/doc/statuscodes.md; Istio's SupportedGRPCStatus).
GRPC_STATUS_CODES = {
    name: code
    for code, name in enumerate(
        [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ]
    )
}


def _fault(r: ObjectReader, path: FieldPath) -> Fault | None:
    if r.mapping(path) is None:
        return None
    delay = abort = None
    if r.mapping((*path, "delay")) is not None:
        base = (*path, "delay")
        fixed = r.duration((*base, "fixedDelay"), required=True)
        pct = r.percentage((*base, "percentage"))
        if pct is None and r.integer((*base, "percent")) is not None:
            pct = float(r.integer((*base, "percent")) or 0)
        if fixed is not None:
            delay = FaultDelay(fixed, 100.0 if pct is None else pct)
    if r.mapping((*path, "abort")) is not None:
        abort = _abort(r, (*path, "abort"))
    return Fault(delay, abort)


def _abort(r: ObjectReader, base: FieldPath) -> FaultAbort | None:
    pct = r.percentage((*base, "percentage"))
    percentage = 100.0 if pct is None else pct
    if r.has((*base, "grpcStatus")):
        if r.has((*base, "httpStatus")):
            r.report(base, "give httpStatus or grpcStatus, not both", code="IST0106")
            return None
        name = r.string((*base, "grpcStatus"))
        code = GRPC_STATUS_CODES.get(name or "")
        if code is None:
            r.report(
                (*base, "grpcStatus"),
                f"{name!r} is not a gRPC status name{did_you_mean(name or '', GRPC_STATUS_CODES)}; "
                "names are grpc's doc/statuscodes.md, such as UNAVAILABLE or NOT_FOUND",
                code="IST0106",
            )
            return None
        return FaultAbort(0, percentage, grpc_status=code)
    status = r.integer((*base, "httpStatus"), required=True)
    if status is not None and not 200 <= status <= 599:
        r.report((*base, "httpStatus"), f"{status} is not an HTTP status", code="IST0106")
        return None
    return None if status is None else FaultAbort(status, percentage)


def _cors(r: ObjectReader, path: FieldPath) -> CorsPolicy | None:
    if r.mapping(path) is None:
        return None
    origins = []
    for i, _ in enumerate(r.sequence((*path, "allowOrigins"))):
        match = string_match(r, (*path, "allowOrigins", i))
        if match is not None:
            origins.append(match)
    origins.extend(StringMatch("exact", str(o)) for o in r.sequence((*path, "allowOrigin")))

    def strings(key: str) -> tuple[str, ...]:
        return tuple(str(x) for x in r.sequence((*path, key)))

    return CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=strings("allowMethods"),
        allow_headers=strings("allowHeaders"),
        expose_headers=strings("exposeHeaders"),
        max_age=r.duration((*path, "maxAge")),
        allow_credentials=r.boolean((*path, "allowCredentials")),
    )


def _http_route(r: ObjectReader, path: FieldPath, domain: str) -> HTTPRoute:
    if r.has((*path, "delegate")):
        r.report((*path, "delegate"), "delegate is not supported yet; this route is ignored")
    matches = []
    for i, _ in enumerate(r.sequence((*path, "match"))):
        match = _http_match(r, (*path, "match", i), r.namespace)
        if match is not None:
            matches.append(match)
    redirect = None
    if r.mapping((*path, "redirect")) is not None:
        base = (*path, "redirect")
        code = r.integer((*base, "redirectCode")) or 301
        if code not in _REDIRECT_CODES:
            r.report(
                (*base, "redirectCode"),
                f"redirect code must be one of {_REDIRECT_CODES}",
                code="IST0106",
            )
        redirect = Redirect(
            r.string((*base, "uri")) or "",
            r.string((*base, "authority")) or "",
            r.port((*base, "port")),
            r.string((*base, "scheme")) or "",
            code,
        )
    direct = None
    if r.mapping((*path, "directResponse")) is not None:
        base = (*path, "directResponse")
        status = r.integer((*base, "status"), required=True) or 200
        body = r.string((*base, "body", "string")) or ""
        direct = DirectResponse(status, body)
    rewrite = None
    if r.mapping((*path, "rewrite")) is not None:
        base = (*path, "rewrite")
        regex = None
        if r.mapping((*base, "uriRegexRewrite")) is not None:
            pattern = r.regex((*base, "uriRegexRewrite", "match"), required=True)
            replacement = r.string((*base, "uriRegexRewrite", "rewrite"), required=True)
            if pattern is not None and replacement is not None:
                regex = (pattern, replacement)
        rewrite = Rewrite(r.string((*base, "uri")), r.string((*base, "authority")) or "", regex)
    retries = None
    if r.mapping((*path, "retries")) is not None:
        base = (*path, "retries")
        attempts = r.integer((*base, "attempts"))
        ignore_previous = r.boolean((*base, "retryIgnorePreviousHosts"))
        retries = Retries(
            attempts if attempts is not None else 2,
            r.duration((*base, "perTryTimeout")),
            r.string((*base, "retryOn")) or "",
            ignore_previous_hosts=ignore_previous is not False,
            remote_localities=r.boolean((*base, "retryRemoteLocalities")) is True,
            backoff=r.duration((*base, "backoff")),
        )
    mirror = None
    if r.mapping((*path, "mirror")) is not None:
        mirror = _destination(r, (*path, "mirror"), domain)
    mirror_pct = _mirror_percentage(r, path)
    mirrors = _mirrors(r, path, domain)
    if mirror is not None and mirrors:
        r.report(path, "HTTP route cannot contain both mirror and mirrors", code="IST0106")
    route = _route_destinations(r, (*path, "route"), domain)
    # A route whose destinations are all invalid has been reported already.
    if (
        not r.has((*path, "route"))
        and redirect is None
        and direct is None
        and not r.has((*path, "delegate"))
    ):
        r.report(path, "an HTTP route needs route, redirect or directResponse", code="IST0106")
    return HTTPRoute(
        name=r.string((*path, "name")) or "",
        match=tuple(matches),
        route=tuple(route),
        redirect=redirect,
        direct_response=direct,
        rewrite=rewrite,
        timeout=r.duration((*path, "timeout")),
        retries=retries,
        fault=_fault(r, (*path, "fault")),
        mirror=mirror,
        mirror_percentage=mirror_pct,
        mirrors=mirrors,
        headers=_headers(r, (*path, "headers")),
        cors=_cors(r, (*path, "corsPolicy")),
        path=path,
    )


def _mirror_percentage(r: ObjectReader, path: FieldPath) -> float | None:
    """Istio (route.go MirrorPercent): ``mirrorPercentage`` first, then the
    deprecated integer ``mirrorPercent`` (validation warns and caps it at 100)."""
    given = r.percentage((*path, "mirrorPercentage"))
    # The reader finds the proto spelling ``mirror_percent`` too (reader._spelt).
    name = "mirrorPercent"
    if r.has((*path, name)):
        r.report(
            (*path, name),
            f'using deprecated setting "{name}", use "mirrorPercentage" instead',
            Severity.WARNING,
        )
        legacy = r.integer((*path, name))
        if legacy is not None and not 0 <= legacy <= 100:
            r.report((*path, name), f"{name} must be 0-100 (it has {legacy})", code="IST0106")
        elif legacy is not None and given is None:
            given = float(legacy)
    return given


def _mirrors(r: ObjectReader, path: FieldPath, domain: str) -> tuple[Mirror, ...]:
    """``mirrors[]`` (validateHTTPMirrors): each needs a destination."""
    out = []
    for i, _ in enumerate(r.sequence((*path, "mirrors"))):
        base = (*path, "mirrors", i)
        if r.mapping((*base, "destination"), required=True) is None:
            continue
        destination = _destination(r, (*base, "destination"), domain)
        if destination is not None:
            out.append(Mirror(destination, r.percentage((*base, "percentage")), base))
    return tuple(out)


def _subnets(r: ObjectReader, path: FieldPath) -> tuple[str, ...]:
    """``destinationSubnets``: IP addresses or CIDR blocks (Istio's
    ValidateIPSubnet)."""
    out = []
    for i, raw in enumerate(r.sequence(path)):
        try:
            ipaddress.ip_network(str(raw), strict=False)
        except ValueError:
            r.report((*path, i), f"{raw!r} is not an IP address or CIDR block", code="IST0106")
            continue
        out.append(str(raw))
    return tuple(out)


def _tcp_route(r: ObjectReader, path: FieldPath, domain: str) -> TCPRoute:
    matches = []
    for i, _ in enumerate(r.sequence((*path, "match"))):
        base = (*path, "match", i)
        matches.append(
            L4Match(
                port=r.port((*base, "port")),
                source_labels=r.labels((*base, "sourceLabels")),
                gateways=tuple(
                    resolve_gateway(str(g), r.namespace) for g in r.sequence((*base, "gateways"))
                ),
                destination_subnets=_subnets(r, (*base, "destinationSubnets")),
            )
        )
    return TCPRoute(tuple(matches), tuple(_route_destinations(r, (*path, "route"), domain)), path)


def _tls_route(r: ObjectReader, path: FieldPath, domain: str, hosts: list[str]) -> TLSRoute:
    """Istio's validation: every match has sniHosts, each a subset of one of
    the VirtualService's hosts (validateSniHost); a route is required."""
    matches = []
    for i, _ in enumerate(r.sequence((*path, "match"), required=True)):
        base = (*path, "match", i)
        sni_hosts = []
        for j, raw in enumerate(r.sequence((*base, "sniHosts"), required=True)):
            sni = str(raw)
            if not any(host_matches(h, sni) for h in hosts):
                r.report(
                    (*base, "sniHosts", j),
                    f"the SNI host {sni!r} must be a subset of one of the hosts {hosts}",
                    code="IST0106",
                )
            sni_hosts.append(sni)
        if r.raw((*base, "sniHosts")) == []:
            r.report((*base, "sniHosts"), "at least one SNI host is required", code="IST0106")
        matches.append(
            TLSMatch(
                sni_hosts=tuple(sni_hosts),
                port=r.port((*base, "port")),
                source_labels=r.labels((*base, "sourceLabels")),
                gateways=tuple(
                    resolve_gateway(str(g), r.namespace) for g in r.sequence((*base, "gateways"))
                ),
                destination_subnets=_subnets(r, (*base, "destinationSubnets")),
            )
        )
    if r.raw((*path, "match")) == []:
        r.report((*path, "match"), "a TLS route needs at least one match", code="IST0106")
    route = _route_destinations(r, (*path, "route"), domain)
    if not r.sequence((*path, "route")):
        r.report((*path, "route"), "a TLS route needs a route", code="IST0106")
    return TLSRoute(tuple(matches), tuple(route), path)


def parse_virtual_service(
    r: ObjectReader, domain: str, partial: bool = False
) -> VirtualService | None:
    """The VirtualService, or None when it has errors. ``partial`` returns
    what could be read even then, so that ``sailplane validate`` can check
    the references of a rejected object too and show every problem at once."""
    check_declared_fields(r)
    written = r.sequence(("spec", "hosts"), required=True)
    hosts = [
        host for i, _ in enumerate(written) if (host := r.host(("spec", "hosts", i))) is not None
    ]
    if r.raw(("spec", "hosts")) == []:
        r.report(("spec", "hosts"), "at least one host is required", code="IST0106")
    if not any(r.sequence(("spec", kind)) for kind in ("http", "tcp", "tls")):
        # pkg/config/validation: Istio's webhook rejects it
        r.report(("spec",), "http, tcp or tls must be provided in virtual service", code="IST0106")
    http = [
        _http_route(r, ("spec", "http", i), domain)
        for i, _ in enumerate(r.sequence(("spec", "http")))
    ]
    tcp = [
        _tcp_route(r, ("spec", "tcp", i), domain) for i, _ in enumerate(r.sequence(("spec", "tcp")))
    ]
    tls = [
        _tls_route(r, ("spec", "tls", i), domain, [str(h) for h in hosts])
        for i, _ in enumerate(r.sequence(("spec", "tls")))
    ]
    gateways: list[Any] = r.sequence(("spec", "gateways"))
    if r.failed and not partial:
        return None
    return VirtualService(
        name=r.name,
        namespace=r.namespace,
        source=r.source,
        hosts=tuple(resolve_host(h, r.namespace, domain) for h in hosts),
        gateways=tuple(resolve_gateway(str(g), r.namespace) for g in gateways) or ("mesh",),
        http=tuple(http),
        tcp=tuple(tcp),
        tls=tuple(tls),
        export_to=tuple(str(x) for x in r.sequence(("spec", "exportTo"))) or ("*",),
    )
