"""Telemetry ``metrics``: per-metric overrides and tag overrides, merged as
Istio merges them (pilot/pkg/model/telemetry.go ``mergeMetrics``).

Istio's merge, which this follows: the ``metrics`` entries of every scope in
force (mesh, namespace, workload, in that order) are applied one after the
other; the providers in scope are those of the last entry that names any
(else the mesh's default providers). Per side (CLIENT = outbound, SERVER =
inbound) and metric, a later override replaces ``disabled`` when it sets it
and adds or replaces tag overrides by name. Disabling ALL_METRICS (or an
override with no metric) turns the side off altogether until a later
override for that side names metrics again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

Mode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]
MODES: tuple[Mode, ...] = get_args(Mode)
PROMETHEUS_PROVIDER = "prometheus"

# Istio's standard metrics (MetricSelector.IstioMetric), in Istio's order.
STANDARD_METRICS = (
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
)
ALL_METRICS = "ALL_METRICS"
# The stats filter's names for them (pilot/pkg/model/telemetry.go
# metricToPrometheusMetric), which a customMetric may also name.
PROMETHEUS_NAMES = {
    "REQUEST_COUNT": "requests_total",
    "REQUEST_DURATION": "request_duration_milliseconds",
    "REQUEST_SIZE": "request_bytes",
    "RESPONSE_SIZE": "response_bytes",
    "TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total",
    "TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total",
    "TCP_SENT_BYTES": "tcp_sent_bytes_total",
    "TCP_RECEIVED_BYTES": "tcp_received_bytes_total",
    "GRPC_REQUEST_MESSAGES": "request_messages_total",
    "GRPC_RESPONSE_MESSAGES": "response_messages_total",
}

# The attributes a tag value may read (Envoy's attribute names, and Istio's
# peer metadata), as far as an access log entry carries them.
TAG_ATTRIBUTES = frozenset(
    {
        *(
            f"request.{name}"
            for name in (
                "path",
                "url_path",
                "host",
                "scheme",
                "method",
                "referer",
                "useragent",
                "id",
                "protocol",
                "query",
            )
        ),
        "response.code",
        "response.code_details",
        "response.grpc_status",
        "source.address",
        "source.port",
        "destination.address",
        "destination.port",
        "upstream.address",
        "upstream.port",
        "connection.mtls",
        "connection.requested_server_name",
        "xds.cluster_name",
        "xds.route_name",
        *(
            f"{peer}.{name}"
            for peer in ("upstream_peer", "downstream_peer")
            for name in ("name", "namespace", "workload", "app", "version", "service", "revision")
        ),
    }
)
# Keyed look-ups: ``request.headers['x-user']``, ``upstream_peer.labels['app']``.
KEYED_TAG_ATTRIBUTES = frozenset(
    {"request.headers", "response.headers", "upstream_peer.labels", "downstream_peer.labels"}
)


@dataclass(frozen=True, slots=True)
class TagValue:
    """A tag override's value: the part of Istio's CEL that sailplane
    evaluates. ``attribute`` empty: the string literal ``key``; else an
    attribute (``request.host``), or a keyed one (``request.headers`` with
    ``key`` the header, ``upstream_peer.labels`` with ``key`` the label)."""

    attribute: str
    key: str = ""


@dataclass(frozen=True, slots=True)
class TagOverride:
    """``tagOverrides.NAME``: REMOVE the tag, or UPSERT it with ``value``."""

    name: str
    remove: bool = False
    value: TagValue | None = None


@dataclass(frozen=True, slots=True)
class MetricOverride:
    """One ``metrics[].overrides[]`` entry. ``metrics`` empty: every metric
    (no ``match.metric``, or ALL_METRICS); else standard metric names and
    customMetric names as written."""

    metrics: tuple[str, ...] = ()
    mode: Mode = "CLIENT_AND_SERVER"
    disabled: bool | None = None
    tags: tuple[TagOverride, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsSpec:
    """One ``spec.metrics`` entry."""

    providers: tuple[str, ...] | None = None
    overrides: tuple[MetricOverride, ...] = ()
    reporting_interval: float | None = None


@dataclass(frozen=True, slots=True)
class TagPlan:
    """One metric's tag overrides, indexed for applying them to each entry:
    ``by_name`` every override by tag name, ``upserts`` the UPSERTs with a
    value in tag order (those that name no standard tag add one)."""

    tags: tuple[TagOverride, ...]
    by_name: Mapping[str, TagOverride]
    upserts: tuple[TagOverride, ...]

    @classmethod
    def of(cls, tags: tuple[TagOverride, ...]) -> TagPlan:
        return cls(
            tags,
            {t.name: t for t in tags},
            tuple(t for t in tags if not t.remove and t.value is not None),
        )


@dataclass(frozen=True, slots=True)
class MetricShape:
    """One side's metrics after Istio's merge: the standard metrics dropped,
    and per metric its tag overrides (sorted by tag name, as Istio's).
    ``plans``: the tag overrides indexed per metric, derived from ``tags``."""

    dropped: frozenset[str] = frozenset()
    tags: tuple[tuple[str, tuple[TagOverride, ...]], ...] = ()
    plans: Mapping[str, TagPlan] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        plans: dict[str, TagPlan] = {}
        for metric, tags in self.tags:
            plans.setdefault(metric, TagPlan.of(tags))  # the first, as tags_of was
        object.__setattr__(self, "plans", plans)

    def plan_of(self, metric: str) -> TagPlan | None:
        """``metric``'s tag overrides; None when it has none."""
        plan = self.plans.get(metric)
        return plan if plan is not None and plan.tags else None

    def tags_of(self, metric: str) -> tuple[TagOverride, ...]:
        plan = self.plans.get(metric)
        return () if plan is None else plan.tags

    def headers(self, attribute: str) -> tuple[str, ...]:
        """The headers the tag values read (``request.headers`` or
        ``response.headers``), lowercase, sorted: the access log must carry them."""
        return tuple(
            sorted(
                {
                    t.value.key.lower()
                    for _, tags in self.tags
                    for t in tags
                    if t.value is not None and t.value.attribute == attribute
                }
            )
        )


PLAIN = MetricShape()


def merge_metrics(
    default_providers: tuple[str, ...], specs: Iterable[MetricsSpec]
) -> tuple[bool, bool, MetricShape, MetricShape]:
    """(client on, server on, client shape, server shape) for sailplane's
    ``prometheus`` provider; see the module docstring."""
    specs = list(specs)
    defaults = default_providers or (PROMETHEUS_PROVIDER,)
    if not specs:
        on = PROMETHEUS_PROVIDER in defaults
        return on, on, PLAIN, PLAIN
    in_scope = defaults
    for spec in specs:
        in_scope = spec.providers or in_scope
    present = False
    all_off = {True: False, False: False}  # keyed by outbound
    disabled: dict[bool, dict[str, bool]] = {True: {}, False: {}}
    tags: dict[bool, dict[str, dict[str, TagOverride]]] = {True: {}, False: {}}
    parent = defaults
    for spec in specs:
        providers = parent = spec.providers or parent
        if PROMETHEUS_PROVIDER not in providers or PROMETHEUS_PROVIDER not in in_scope:
            continue
        present = True
        for override in spec.overrides:
            sides = [s for s in (True, False) if override.mode != ("SERVER" if s else "CLIENT")]
            if not override.metrics and override.disabled:
                for side in sides:
                    all_off[side] = True
                continue
            for side in sides:
                all_off[side] = False
                for metric in override.metrics or STANDARD_METRICS:
                    if override.disabled is not None:
                        disabled[side][metric] = override.disabled
                    for tag in override.tags:
                        tags[side].setdefault(metric, {})[tag.name] = tag
    if not present:
        return False, False, PLAIN, PLAIN

    def shape(side: bool) -> MetricShape:
        return MetricShape(
            frozenset(m for m, off in disabled[side].items() if off),
            tuple(
                (m, tuple(found[n] for n in sorted(found)))
                for m, found in sorted(tags[side].items())
                if found
            ),
        )

    return not all_off[True], not all_off[False], shape(True), shape(False)
