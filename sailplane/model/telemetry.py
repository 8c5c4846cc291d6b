"""Istio's Telemetry API (telemetry.istio.io/v1) and what it comes to for one
workload.

Scopes, as Istio's: a Telemetry in the root namespace without a selector is
mesh-wide, one in another namespace without a selector covers that
namespace, one with ``selector.matchLabels`` covers the workloads it selects.
For each of ``tracing``, ``accessLogging`` and ``metrics`` the most specific
Telemetry that has the section wins; tracing fields it leaves unset
(providers, sampling) are inherited from the wider scopes, then from the mesh
settings. Several Telemetries at one level: Istio takes the oldest, here the
first by name (deterministic).

Built-in providers (no ``extensionProviders`` entry needed):

* ``envoy``: Envoy's file access log as the mesh settings say
  (``accessLogFile``, ``accessLogEncoding``, ``accessLogFormat``);
* ``prometheus``: Istio's standard metrics, computed by sailplane from the
  proxies' gRPC access log stream and served on its monitor port;
* ``sailplane``: the same stream written by sailplane as JSON lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from sailplane.model.registry import Workload, selector_matches
from sailplane.model.sidecar import MeshSettings, Provider
from sailplane.model.source import Source
from sailplane.model.telemetry_metrics import (
    ALL_METRICS,
    MODES,
    PLAIN,
    PROMETHEUS_NAMES,
    PROMETHEUS_PROVIDER,
    STANDARD_METRICS,
    MetricOverride,
    MetricShape,
    MetricsSpec,
    Mode,
    TagOverride,
    TagPlan,
    TagValue,
    merge_metrics,
)

if TYPE_CHECKING:
    from sailplane.model.mesh import MeshConfig

__all__ = [  # the metrics part lives in telemetry_metrics.py
    "ALL_METRICS",
    "MODES",
    "PLAIN",
    "PROMETHEUS_NAMES",
    "PROMETHEUS_PROVIDER",
    "STANDARD_METRICS",
    "MetricOverride",
    "MetricShape",
    "MetricsSpec",
    "Mode",
    "TagOverride",
    "TagPlan",
    "TagValue",
]

ENVOY_PROVIDER = "envoy"
SAILPLANE_PROVIDER = "sailplane"
BUILTIN_PROVIDERS = (ENVOY_PROVIDER, PROMETHEUS_PROVIDER, SAILPLANE_PROVIDER)
TRACING_KINDS = ("opentelemetry", "zipkin")
DEFAULT_REPORTING_INTERVAL = 5.0  # seconds; TCP byte counts between connection open and close


TagSource = Literal["literal", "environment", "header", "formatter"]
TAG_SOURCES: tuple[TagSource, ...] = get_args(TagSource)


@dataclass(frozen=True, slots=True)
class CustomTag:
    """``tracing[].customTags.NAME``: ``source`` says where its value comes
    from: ``literal`` (``value``), ``environment`` (the proxy's environment
    variable ``value``), ``header`` (the request header ``value``) or
    ``formatter`` (an access log format string, ``value``)."""

    name: str
    source: TagSource
    value: str
    default: str = ""


@dataclass(frozen=True, slots=True)
class TracingSpec:
    """One ``spec.tracing`` entry. ``None``: inherit from the wider scope."""

    providers: tuple[str, ...] | None = None
    sampling: float | None = None  # randomSamplingPercentage
    disable_span_reporting: bool | None = None
    mode: Mode = "CLIENT_AND_SERVER"
    # Replaces the wider scope's whole set when set (Istio's shallow merge).
    custom_tags: tuple[CustomTag, ...] | None = None


@dataclass(frozen=True, slots=True)
class AccessLoggingSpec:
    """One ``spec.accessLogging`` entry."""

    providers: tuple[str, ...] | None = None  # None: the mesh's default providers
    disabled: bool = False
    mode: Mode = "CLIENT_AND_SERVER"
    # filter.expression: a CEL expression (syntax checked at load); "": log every request.
    filter: str = ""


@dataclass(frozen=True, slots=True)
class Telemetry:
    name: str
    namespace: str
    source: Source
    selector: Mapping[str, str] = field(default_factory=dict)
    tracing: tuple[TracingSpec, ...] = ()
    access_logging: tuple[AccessLoggingSpec, ...] = ()
    metrics: tuple[MetricsSpec, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Directions:
    """Which sides of a proxy a setting applies to: client = outbound
    (reporter=source), server = inbound (reporter=destination)."""

    client: bool = True
    server: bool = True

    @classmethod
    def of(cls, mode: Mode) -> Directions:
        return cls(mode != "SERVER", mode != "CLIENT")

    def side(self, outbound: bool) -> bool:
        return self.client if outbound else self.server


NOWHERE = Directions(False, False)


@dataclass(frozen=True, slots=True)
class TracingPlan:
    provider: Provider
    sampling: float  # percent
    directions: Directions = Directions()
    custom_tags: tuple[CustomTag, ...] = ()  # sorted by name


@dataclass(frozen=True, slots=True)
class WorkloadTelemetry:
    """Everything telemetry-related one proxy is configured with."""

    metrics: Directions = Directions()
    client_metrics: MetricShape = PLAIN
    server_metrics: MetricShape = PLAIN
    reporting_interval: float = DEFAULT_REPORTING_INTERVAL
    # Envoy file access logs: providers of kind envoyFileAccessLog, each with its sides.
    file_logs: tuple[tuple[Provider, Directions], ...] = ()
    # OpenTelemetry access logs (envoyOtelAls providers), each with its sides.
    otel_logs: tuple[tuple[Provider, Directions], ...] = ()
    sailplane_logs: Directions = NOWHERE
    tracing: TracingPlan | None = None
    # accessLogging[].filter per file/OpenTelemetry provider: (name, client, server)
    # CEL expressions; a provider not here, or "", logs every request.
    log_filters: tuple[tuple[str, str, str], ...] = ()

    def log_filter(self, provider: Provider, outbound: bool) -> str:
        """The CEL expression gating ``provider``'s log on that side ("": none).
        Never applies to sailplane's own stream, which the metrics count."""
        for name, client, server in self.log_filters:
            if name == provider.name:
                return client if outbound else server
        return ""

    def streams_to_sailplane(self, outbound: bool) -> bool:
        """Whether that side's access log stream goes to sailplane."""
        return self.metrics.side(outbound) or self.sailplane_logs.side(outbound)

    def metric_shape(self, outbound: bool) -> MetricShape:
        return self.client_metrics if outbound else self.server_metrics


def builtin_provider(settings: MeshSettings, name: str) -> Provider | None:
    """A provider by name: the mesh's ``extensionProviders`` first, then the built-ins."""
    found = settings.provider(name)
    if found is not None:
        return found
    if name == ENVOY_PROVIDER:
        return Provider(
            ENVOY_PROVIDER,
            "envoyFileAccessLog",
            path=settings.access_log_file or "/dev/stdout",
            encoding=settings.access_log_encoding,
            format=settings.access_log_format,
        )
    if name in (PROMETHEUS_PROVIDER, SAILPLANE_PROVIDER):
        return Provider(name, name)
    return None


def _scopes(mesh: MeshConfig, workload: Workload) -> list[Telemetry]:
    """The Telemetries that apply, widest first: mesh, namespace, workload."""
    mesh_level = [t for t in mesh.telemetries if t.namespace == mesh.root_namespace]
    mesh_wide = [t for t in mesh_level if not t.selector][:1]
    namespace = [t for t in mesh.telemetries if t.namespace == workload.namespace]
    namespace_wide = (
        [t for t in namespace if not t.selector][:1]
        if workload.namespace != mesh.root_namespace
        else []
    )
    selected = [
        t for t in namespace if t.selector and selector_matches(t.selector, workload.labels)
    ]
    return [*mesh_wide, *namespace_wide, *selected[:1]]


def telemetry_for(mesh: MeshConfig, workload: Workload) -> WorkloadTelemetry:
    settings = mesh.settings
    scopes = _scopes(mesh, workload)
    file_logs, otel_logs, sailplane_logs, log_filters = _access_logs(settings, scopes)
    client_on, server_on, client, server = merge_metrics(
        settings.default_metrics, [m for t in scopes for m in t.metrics]
    )
    return WorkloadTelemetry(
        metrics=Directions(client_on, server_on),
        client_metrics=client,
        server_metrics=server,
        reporting_interval=next(
            (
                m.reporting_interval
                for t in reversed(scopes)
                for m in t.metrics
                if m.reporting_interval is not None
            ),
            DEFAULT_REPORTING_INTERVAL,
        ),
        file_logs=file_logs,
        otel_logs=otel_logs,
        sailplane_logs=sailplane_logs,
        tracing=_tracing(settings, scopes),
        log_filters=log_filters,
    )


EnvoyLogs = tuple[tuple[Provider, Directions], ...]
LogFilters = tuple[tuple[str, str, str], ...]


def _access_logs(
    settings: MeshSettings, scopes: list[Telemetry]
) -> tuple[EnvoyLogs, EnvoyLogs, Directions, LogFilters]:
    """(file logs, OpenTelemetry logs, sailplane's JSON log sides, filters).

    Filters as Istio's mergeLogs (pilot/pkg/model/telemetry.go): per side,
    the last entry naming a provider sets its filter, none included. Unlike
    Istio's, an entry without providers filters the default providers too
    (Istio keys filters by the names an entry lists, so it drops that one)."""
    specs = next((t.access_logging for t in reversed(scopes) if t.access_logging), None)
    if specs is None:
        # No Telemetry says anything: the mesh settings (accessLogFile is
        # Istio's legacy switch for the `envoy` provider), then the defaults.
        names = list(settings.default_access_logging)
        if settings.access_log_file and ENVOY_PROVIDER not in names:
            names.insert(0, ENVOY_PROVIDER)
        specs = (AccessLoggingSpec(tuple(names)),) if names else ()
    files: dict[str, tuple[Provider, Directions]] = {}
    filters: dict[str, tuple[str, str]] = {}
    sailplane = NOWHERE
    for spec in specs:
        sides = NOWHERE if spec.disabled else Directions.of(spec.mode)
        for name in spec.providers or settings.default_access_logging or (ENVOY_PROVIDER,):
            provider = builtin_provider(settings, name)
            if provider is None:
                continue
            if provider.kind == SAILPLANE_PROVIDER:
                sailplane = _merge(sailplane, sides, spec.disabled)
            elif provider.kind in ("envoyFileAccessLog", "envoyOtelAls"):
                before = files.get(name, (provider, NOWHERE))[1]
                files[name] = (provider, _merge(before, sides, spec.disabled))
                client, server = filters.get(name, ("", ""))
                filters[name] = (
                    spec.filter if sides.client else client,
                    spec.filter if sides.server else server,
                )
    on = [(p, d) for p, d in files.values() if d.client or d.server]
    return (
        tuple((p, d) for p, d in on if p.kind == "envoyFileAccessLog"),
        tuple((p, d) for p, d in on if p.kind == "envoyOtelAls"),
        sailplane,
        tuple((p.name, *filters[p.name]) for p, _ in on if any(filters[p.name])),
    )


def _merge(before: Directions, sides: Directions, disabled: bool) -> Directions:
    if disabled:
        return NOWHERE
    return Directions(before.client or sides.client, before.server or sides.server)


def _tracing(settings: MeshSettings, scopes: list[Telemetry]) -> TracingPlan | None:
    providers: tuple[str, ...] = settings.default_tracing
    sampling = settings.tracing_sampling
    disabled = False
    mode: Mode = "CLIENT_AND_SERVER"
    tags: tuple[CustomTag, ...] = ()
    configured = settings.enable_tracing or bool(settings.default_tracing)
    for telemetry in scopes:
        for spec in telemetry.tracing[:1]:
            configured = True
            providers = spec.providers if spec.providers is not None else providers
            sampling = spec.sampling if spec.sampling is not None else sampling
            tags = spec.custom_tags if spec.custom_tags is not None else tags
            if spec.disable_span_reporting is not None:
                disabled = spec.disable_span_reporting
            mode = spec.mode
    if not configured or disabled:
        return None
    for name in providers[:1]:  # Envoy has one tracer per listener; Istio uses the first
        provider = settings.provider(name)
        if provider is not None and provider.kind in TRACING_KINDS:
            ordered = tuple(sorted(tags, key=lambda t: t.name))
            return TracingPlan(provider, sampling, Directions.of(mode), ordered)
    return None
