"""Parse Telemetry ``spec.metrics``: providers, reporting interval, and the
per-metric overrides (``match``, ``disabled``, ``tagOverrides``), checked as
Istio's validation checks them (pkg/config/validation ``validateTelemetryMetrics``).

Tag values are CEL expressions in Istio, evaluated by the proxy's stats
filter. sailplane computes the metrics from the access log stream, so it
evaluates the expressions an access log entry can answer: string literals,
the attributes in ``TAG_ATTRIBUTES`` and the keyed look-ups in
``KEYED_TAG_ATTRIBUTES``; any other expression is reported and its tag
override left out.
"""

from __future__ import annotations

import re

from sailplane.config.reader import ObjectReader
from sailplane.model.source import FieldPath, Severity
from sailplane.model.telemetry_metrics import (
    ALL_METRICS,
    KEYED_TAG_ATTRIBUTES,
    MODES,
    PROMETHEUS_NAMES,
    STANDARD_METRICS,
    TAG_ATTRIBUTES,
    MetricOverride,
    MetricsSpec,
    TagOverride,
    TagValue,
)

_LITERAL = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")
_KEYED = re.compile(r"([a-z_]+\.[a-z_]+)\[\s*(?:'([^'\\]*)'|\"([^\"\\]*)\")\s*\](\.value)?")
_TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BY_PROMETHEUS_NAME = {v: k for k, v in PROMETHEUS_NAMES.items()}
# Standard metrics sailplane does not produce (it sees no gRPC messages).
_NOT_PRODUCED = ("GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES")


def parse_tag_value(text: str) -> TagValue | None:
    """The expression as sailplane evaluates it, or None if it cannot."""
    text = text.strip()
    literal = _LITERAL.fullmatch(text)
    if literal:
        return TagValue("", literal.group(1) if literal.group(1) is not None else literal.group(2))
    keyed = _KEYED.fullmatch(text)
    if keyed and keyed.group(1) in KEYED_TAG_ATTRIBUTES:
        if keyed.group(4) and not keyed.group(1).endswith("_peer.labels"):
            return None  # ``.value`` is the peer metadata's form only
        key = keyed.group(2) if keyed.group(2) is not None else keyed.group(3)
        return TagValue(keyed.group(1), key)
    if text in TAG_ATTRIBUTES:
        return TagValue(text)
    return None


def _tag(r: ObjectReader, path: FieldPath, name: str) -> TagOverride | None:
    if not _TAG_NAME.fullmatch(name):
        r.report(
            path,
            f"tag name {name!r} is not a Prometheus label name "
            "(letters, digits and '_', not starting with a digit); ignored",
            Severity.WARNING,
        )
        return None
    operation = r.enum((*path, "operation"), ("UPSERT", "REMOVE"), "UPSERT")
    value = r.string((*path, "value"))
    if operation == "REMOVE":
        if value:
            r.report(
                (*path, "value"),
                "tagOverrides.value may only be set when operation is UPSERT",
                code="IST0106",
            )
        return TagOverride(name, remove=True)
    if not value:
        r.report(path, "tagOverrides.value must be set when operation is UPSERT", code="IST0106")
        return None
    parsed = parse_tag_value(value)
    if parsed is None:
        r.report(
            (*path, "value"),
            f"sailplane cannot evaluate {value!r}: it evaluates string literals, "
            "request.headers['NAME'], response.headers['NAME'], "
            "upstream_peer.labels['KEY'], downstream_peer.labels['KEY'] and "
            f"{', '.join(sorted(TAG_ATTRIBUTES))}; this tag override is ignored",
            Severity.WARNING,
        )
        return None
    return TagOverride(name, value=parsed)


def _matched(r: ObjectReader, path: FieldPath) -> tuple[str, ...]:
    """The metrics an override's ``match`` names; () for every metric."""
    metric_path, custom_path = (*path, "match", "metric"), (*path, "match", "customMetric")
    if r.has(metric_path) and r.has(custom_path):
        r.report(custom_path, "match takes metric or customMetric, not both", code="IST0106")
        return ()
    if r.has(custom_path):
        custom = r.string(custom_path)
        if not custom:
            r.report(custom_path, "customMetric may not be empty", code="IST0106")
            return ()
        if custom in _BY_PROMETHEUS_NAME:  # the stats filter's own name of a standard metric
            return (_BY_PROMETHEUS_NAME[custom],)
        r.report(
            custom_path,
            f"customMetric {custom!r} is not one of Istio's standard metrics "
            f"({', '.join(PROMETHEUS_NAMES.values())}) and sailplane defines no other; "
            "this override does nothing",
            Severity.WARNING,
        )
        return (custom,)
    metric = r.enum(metric_path, (ALL_METRICS, *STANDARD_METRICS), ALL_METRICS)
    return () if metric == ALL_METRICS else (metric,)


def _override(r: ObjectReader, path: FieldPath) -> MetricOverride:
    metrics = _matched(r, path)
    tags = []
    for name in r.mapping((*path, "tagOverrides")) or {}:
        found = _tag(r, (*path, "tagOverrides", str(name)), str(name))
        if found is not None:
            tags.append(found)
    not_produced = [m for m in metrics if m in _NOT_PRODUCED]
    if not_produced and tags:
        r.report(
            (*path, "tagOverrides"),
            f"sailplane does not produce {PROMETHEUS_NAMES[not_produced[0]]} "
            "(it sees no gRPC messages); these tag overrides do nothing",
            Severity.WARNING,
        )
    return MetricOverride(
        metrics=metrics,
        mode=r.enum((*path, "match", "mode"), MODES, "CLIENT_AND_SERVER"),
        disabled=r.boolean((*path, "disabled")),
        tags=tuple(sorted(tags, key=lambda t: t.name)),
    )


def read_providers(r: ObjectReader, path: FieldPath) -> tuple[str, ...] | None:
    """A ``providers`` list's names; None when absent (inherit)."""
    if not r.has(path):
        return None
    names = []
    for i, _ in enumerate(r.sequence(path)):
        name = r.string((*path, i, "name"), required=True)
        if name:
            names.append(name)
    return tuple(names)


def parse_metrics(r: ObjectReader) -> list[MetricsSpec]:
    """``spec.metrics``."""
    specs = []
    for i, _ in enumerate(r.sequence(("spec", "metrics"))):
        path: FieldPath = ("spec", "metrics", i)
        overrides = [
            _override(r, (*path, "overrides", j))
            for j, _ in enumerate(r.sequence((*path, "overrides")))
        ]
        specs.append(
            MetricsSpec(
                providers=read_providers(r, (*path, "providers")),
                overrides=tuple(overrides),
                reporting_interval=r.duration((*path, "reportingInterval")),
            )
        )
    return specs
