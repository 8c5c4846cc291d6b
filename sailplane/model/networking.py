"""Istio's traffic API (networking.istio.io/v1) as typed values.

Hosts are kept as written plus resolved FQDNs; durations are seconds
(float); percentages are 0-100 floats, as in Istio. Every object keeps its
:class:`Source` so translation can report problems at the right line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sailplane.model.locality import LocalityLbSetting
from sailplane.model.source import FieldPath, Source

# -- matching --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio StringMatch: exactly one of exact / prefix / regex."""

    kind: str  # "exact" | "prefix" | "regex"
    value: str


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str
    match: StringMatch | None  # None = the header is present
    invert: bool = False  # withoutHeaders


@dataclass(frozen=True, slots=True)
class HTTPMatch:
    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[tuple[str, StringMatch | None], ...] = ()
    ignore_uri_case: bool = False
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()  # resolved "ns/name" or "mesh"


# -- actions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    host: str  # FQDN (or an external host as written)
    subset: str = ""
    port: int | None = None
    written: str = field(default="", compare=False)  # the host as the user wrote it


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    set: Mapping[str, str] = field(default_factory=dict)
    add: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True, slots=True)
class Headers:
    request: HeaderOperations = field(default_factory=HeaderOperations)
    response: HeaderOperations = field(default_factory=HeaderOperations)


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int = 0
    headers: Headers = field(default_factory=Headers)
    path: FieldPath = ()  # where in the object, for diagnostics


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    port: int | None = None
    scheme: str = ""
    code: int = 301


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    authority: str = ""
    uri_regex: tuple[str, str] | None = None  # (match, rewrite)


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: str = ""
    # Retry on another host than those tried before (Istio's default: yes).
    ignore_previous_hosts: bool = True
    # Retry in other localities (priorities) than those tried before.
    remote_localities: bool = False
    # Base interval of Envoy's exponential back-off between retries, in seconds
    # (unset: Envoy's 25 ms).
    backoff: float | None = None


@dataclass(frozen=True, slots=True)
class FaultDelay:
    fixed_delay: float
    percentage: float = 100.0


@dataclass(frozen=True, slots=True)
class FaultAbort:
    http_status: int  # 0 when the abort is a gRPC status
    percentage: float = 100.0
    grpc_status: int | None = None  # a gRPC status code (Istio's grpcStatus, by name)


@dataclass(frozen=True, slots=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class Mirror:
    """One of ``mirrors[]``: a copy of the requests, ``percentage`` of them
    (None: all), sent to ``destination`` and its answer dropped."""

    destination: Destination
    percentage: float | None = None
    path: FieldPath = ()


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    name: str = ""
    match: tuple[HTTPMatch, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    timeout: float | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirror: Destination | None = None
    # mirrorPercentage, else the deprecated mirrorPercent; None: 100%.
    mirror_percentage: float | None = None
    mirrors: tuple[Mirror, ...] = ()
    headers: Headers = field(default_factory=Headers)
    cors: CorsPolicy | None = None
    path: FieldPath = ()


@dataclass(frozen=True, slots=True)
class L4Match:
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    destination_subnets: tuple[str, ...] = ()  # CIDRs or addresses, as written


@dataclass(frozen=True, slots=True)
class TCPRoute:
    match: tuple[L4Match, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    path: FieldPath = ()


@dataclass(frozen=True, slots=True)
class TLSMatch:
    """Istio TLSMatchAttributes: the SNI names (wildcards kept) and the L4 part."""

    sni_hosts: tuple[str, ...]
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    destination_subnets: tuple[str, ...] = ()  # CIDRs or addresses, as written


@dataclass(frozen=True, slots=True)
class TLSRoute:
    """Routes TLS by SNI without terminating it (``VirtualService.tls``)."""

    match: tuple[TLSMatch, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    path: FieldPath = ()


@dataclass(frozen=True, slots=True)
class VirtualService:
    name: str
    namespace: str
    source: Source
    hosts: tuple[str, ...]  # resolved FQDNs, wildcards kept
    gateways: tuple[str, ...] = ("mesh",)  # resolved "ns/name" or "mesh"
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    export_to: tuple[str, ...] = ("*",)
    tls: tuple[TLSRoute, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# -- DestinationRule -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    header: str = ""
    cookie: str = ""
    cookie_ttl: float | None = None
    cookie_path: str = ""
    source_ip: bool = False
    query_parameter: str = ""
    minimum_ring_size: int | None = None


LoadBalancerSimple = Literal[
    "", "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
]
LB_SIMPLE: tuple[LoadBalancerSimple, ...] = tuple(m for m in get_args(LoadBalancerSimple) if m)


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    simple: LoadBalancerSimple = ""  # "": not set
    consistent_hash: ConsistentHash | None = None
    locality: LocalityLbSetting | None = None


H2UpgradePolicy = Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]
H2_UPGRADE_POLICIES: tuple[H2UpgradePolicy, ...] = get_args(H2UpgradePolicy)


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    h2_upgrade_policy: H2UpgradePolicy = "DEFAULT"
    use_client_protocol: bool = False


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


ClientTLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
CLIENT_TLS_MODES: tuple[ClientTLSMode, ...] = get_args(ClientTLSMode)


@dataclass(frozen=True, slots=True)
class ClientTLS:
    mode: ClientTLSMode
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    # A Secret in the proxy's namespace (SDS ``kubernetes://NAME``), instead of files.
    credential_name: str = ""


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """Each field replaces the parent's whole (Istio's MergeTrafficPolicy)."""

    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLS | None = None
    port_level: Mapping[int, TrafficPolicy] = field(default_factory=dict)

    def overridden_by(self, other: TrafficPolicy | None) -> TrafficPolicy:
        """``other``'s settings where it has them, else ours; no port levels."""
        if other is None:
            return self
        return TrafficPolicy(
            **{
                name: getattr(other, name)
                if getattr(other, name) is not None
                else getattr(self, name)
                for name in _MERGED_SETTINGS
            }
        )

    def for_port(self, port: int) -> TrafficPolicy:
        return dataclasses.replace(self, port_level={}).overridden_by(self.port_level.get(port))


# Every setting of a TrafficPolicy merges the same way, so a new one merges
# without a word here.
_MERGED_SETTINGS = tuple(
    f.name for f in dataclasses.fields(TrafficPolicy) if f.name != "port_level"
)


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Mapping[str, str]
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    name: str
    namespace: str
    source: Source
    host: str  # resolved FQDN or wildcard
    subsets: tuple[Subset, ...] = ()
    traffic_policy: TrafficPolicy | None = None
    export_to: tuple[str, ...] = ("*",)
    # Applies only to the proxies of its namespace with these labels (model/destinationrules.py).
    workload_selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def policy(self, port: int, subset: str = "") -> TrafficPolicy:
        """The effective policy for one port of one subset (Istio precedence:
        top level < top-level port settings < subset < subset port settings)."""
        policy = (self.traffic_policy or TrafficPolicy()).for_port(port)
        chosen = self.subset(subset) if subset else None
        if chosen is not None and chosen.traffic_policy is not None:
            policy = policy.overridden_by(chosen.traffic_policy.for_port(port))
        return policy


# -- Gateway ---------------------------------------------------------------


ServerTLSMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]
SERVER_TLS_MODES: tuple[ServerTLSMode, ...] = get_args(ServerTLSMode)


@dataclass(frozen=True, slots=True)
class ServerTLS:
    mode: ServerTLSMode
    credential_name: str = ""
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    https_redirect: bool = False


@dataclass(frozen=True, slots=True)
class GatewayServer:
    port: int
    port_name: str
    protocol: str  # HTTP | HTTPS | HTTP2 | GRPC | TCP | TLS
    hosts: tuple[tuple[str, str], ...]  # (namespace or "*", host)
    tls: ServerTLS | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    namespace: str
    source: Source
    selector: Mapping[str, str]
    servers: tuple[GatewayServer, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
