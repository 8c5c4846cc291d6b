"""Parse ``DestinationRule`` (istio.io/latest/docs/reference/config/networking/destination-rule)."""

from __future__ import annotations

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.locality import parse_locality_lb
from sailplane.config.reader import ObjectReader
from sailplane.model.hosts import resolve_host
from sailplane.model.locality import LocalityLbSetting
from sailplane.model.networking import (
    CLIENT_TLS_MODES,
    H2_UPGRADE_POLICIES,
    LB_SIMPLE,
    ClientTLS,
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    LoadBalancer,
    OutlierDetection,
    Subset,
    TrafficPolicy,
)
from sailplane.model.source import FieldPath, Severity


def _load_balancer(r: ObjectReader, path: FieldPath) -> LoadBalancer | None:
    if r.mapping(path) is None:
        return None
    simple = r.enum((*path, "simple"), LB_SIMPLE, "") if r.raw((*path, "simple")) else ""
    if simple == "LEAST_CONN":
        simple = "LEAST_REQUEST"  # Istio: LEAST_CONN is a deprecated alias
    chash = None
    base = (*path, "consistentHash")
    if r.mapping(base) is not None:
        cookie = r.mapping((*base, "httpCookie"))
        chash = ConsistentHash(
            header=r.string((*base, "httpHeaderName")) or "",
            cookie=(r.string((*base, "httpCookie", "name"), required=True) or "") if cookie else "",
            cookie_ttl=r.duration((*base, "httpCookie", "ttl")) if cookie else None,
            cookie_path=(r.string((*base, "httpCookie", "path")) or "") if cookie else "",
            source_ip=bool(r.boolean((*base, "useSourceIp"))),
            query_parameter=r.string((*base, "httpQueryParameterName")) or "",
            minimum_ring_size=r.integer((*base, "minimumRingSize"))
            or r.integer((*base, "ringHash", "minimumRingSize")),
        )
        chosen = [chash.header, chash.cookie, chash.source_ip, chash.query_parameter]
        if sum(bool(x) for x in chosen) != 1:
            r.report(
                base,
                "consistentHash needs exactly one of httpHeaderName, httpCookie, "
                "useSourceIp, httpQueryParameterName",
                code="IST0106",
            )
        if simple:
            r.report(path, "set either simple or consistentHash, not both", code="IST0106")
    return LoadBalancer(simple, chash, _locality_lb(r, path))


def _locality_lb(r: ObjectReader, path: FieldPath) -> LocalityLbSetting | None:
    where = (*path, "localityLbSetting")

    def report(sub: FieldPath, message: str, severity: Severity) -> None:
        r.report(
            (*where, *sub), message, severity, "" if severity is Severity.WARNING else "IST0106"
        )

    has_outlier = r.has((*path[:-1], "outlierDetection"))
    return parse_locality_lb(r.raw(where) if r.has(where) else None, report, has_outlier)


def _connection_pool(r: ObjectReader, path: FieldPath) -> ConnectionPool | None:
    if r.mapping(path) is None:
        return None
    tcp, http = (*path, "tcp"), (*path, "http")
    return ConnectionPool(
        max_connections=r.integer((*tcp, "maxConnections")),
        connect_timeout=r.duration((*tcp, "connectTimeout")),
        http1_max_pending_requests=r.integer((*http, "http1MaxPendingRequests")),
        http2_max_requests=r.integer((*http, "http2MaxRequests")),
        max_requests_per_connection=r.integer((*http, "maxRequestsPerConnection")),
        max_retries=r.integer((*http, "maxRetries")),
        idle_timeout=r.duration((*http, "idleTimeout")),
        h2_upgrade_policy=r.enum((*http, "h2UpgradePolicy"), H2_UPGRADE_POLICIES, "DEFAULT"),
        use_client_protocol=r.boolean((*http, "useClientProtocol")) is True,
    )


def _outlier_detection(r: ObjectReader, path: FieldPath) -> OutlierDetection | None:
    if r.mapping(path) is None:
        return None
    five_xx = r.integer((*path, "consecutive5xxErrors"))
    if five_xx is None and r.integer((*path, "consecutiveErrors")) is not None:
        five_xx = r.integer((*path, "consecutiveErrors"))
        r.report(
            (*path, "consecutiveErrors"),
            "consecutiveErrors is deprecated; use consecutive5xxErrors",
            Severity.WARNING,
        )
    percent = r.integer((*path, "maxEjectionPercent"))
    if percent is not None and not 0 <= percent <= 100:
        r.report((*path, "maxEjectionPercent"), "must be 0-100", code="IST0106")
    return OutlierDetection(
        consecutive_5xx_errors=five_xx,
        consecutive_gateway_errors=r.integer((*path, "consecutiveGatewayErrors")),
        interval=r.duration((*path, "interval")),
        base_ejection_time=r.duration((*path, "baseEjectionTime")),
        max_ejection_percent=percent,
        min_health_percent=r.integer((*path, "minHealthPercent")),
    )


def _client_tls(r: ObjectReader, path: FieldPath) -> ClientTLS | None:
    if r.mapping(path) is None:
        return None
    mode = r.enum((*path, "mode"), CLIENT_TLS_MODES, "DISABLE")
    tls = ClientTLS(
        mode=mode,
        client_certificate=r.string((*path, "clientCertificate")) or "",
        private_key=r.string((*path, "privateKey")) or "",
        ca_certificates=r.string((*path, "caCertificates")) or "",
        sni=r.string((*path, "sni")) or "",
        subject_alt_names=tuple(str(x) for x in r.sequence((*path, "subjectAltNames"))),
        credential_name=r.string((*path, "credentialName")) or "",
    )
    if tls.credential_name and mode == "ISTIO_MUTUAL":
        r.report(
            (*path, "credentialName"),
            "ISTIO_MUTUAL uses the mesh identity; credentialName is not allowed",
            code="IST0106",
        )
    if (
        mode == "MUTUAL"
        and not tls.credential_name
        and not (tls.client_certificate and tls.private_key)
    ):
        r.report(
            path, "MUTUAL needs clientCertificate and privateKey, or credentialName", code="IST0106"
        )
    return tls


def _traffic_policy(
    r: ObjectReader, path: FieldPath, allow_ports: bool = True
) -> TrafficPolicy | None:
    if r.mapping(path) is None:
        return None
    ports: dict[int, TrafficPolicy] = {}
    if allow_ports:
        for i, _ in enumerate(r.sequence((*path, "portLevelSettings"))):
            sub = (*path, "portLevelSettings", i)
            number = r.port((*sub, "port", "number"), required=True)
            policy = _traffic_policy(r, sub, allow_ports=False)
            if number is not None and policy is not None:
                if number in ports:
                    r.report(
                        (*sub, "port"), f"port {number} has two portLevelSettings", code="IST0106"
                    )
                ports[number] = policy
    return TrafficPolicy(
        load_balancer=_load_balancer(r, (*path, "loadBalancer")),
        connection_pool=_connection_pool(r, (*path, "connectionPool")),
        outlier_detection=_outlier_detection(r, (*path, "outlierDetection")),
        tls=_client_tls(r, (*path, "tls")),
        port_level=ports,
    )


def _workload_selector(r: ObjectReader) -> dict[str, str]:
    """``workloadSelector.matchLabels``, checked as Istio's validateWorkloadSelector."""
    path = ("spec", "workloadSelector")
    if r.mapping(path) is None:
        return {}
    labels = dict(r.labels((*path, "matchLabels")))
    for key, value in labels.items():
        if not key:
            r.report((*path, "matchLabels"), "empty key is not supported in selector")
        if "*" in key or "*" in value:
            r.report(
                (*path, "matchLabels", key), f"wildcard is not supported in selector: {key}={value}"
            )
    if not labels:
        r.report(
            path,
            "workload selector specified without labels; sailplane applies the rule "
            "as if it had no selector",
            Severity.WARNING,
        )
    return labels


def parse_destination_rule(r: ObjectReader, domain: str) -> DestinationRule | None:
    check_declared_fields(r)
    host = r.host(("spec", "host"), required=True)
    subsets = []
    names: set[str] = set()
    for i, _ in enumerate(r.sequence(("spec", "subsets"))):
        sub = ("spec", "subsets", i)
        name = r.string((*sub, "name"), required=True)
        if name is None:
            continue
        if name in names:
            r.report((*sub, "name"), f"duplicate subset {name!r}", code="IST0106")
        names.add(name)
        subsets.append(
            Subset(name, r.labels((*sub, "labels")), _traffic_policy(r, (*sub, "trafficPolicy")))
        )
    policy = _traffic_policy(r, ("spec", "trafficPolicy"))
    selector = _workload_selector(r)
    if r.failed or host is None:
        return None
    return DestinationRule(
        name=r.name,
        namespace=r.namespace,
        source=r.source,
        host=resolve_host(host, r.namespace, domain),
        subsets=tuple(subsets),
        traffic_policy=policy,
        export_to=tuple(str(x) for x in r.sequence(("spec", "exportTo"))) or ("*",),
        workload_selector=selector,
    )
