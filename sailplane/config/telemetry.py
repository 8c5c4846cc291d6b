"""Parse ``telemetry.istio.io/v1`` Telemetry (istio.io/latest/docs/reference/
config/telemetry) and check its provider names against the mesh settings."""

from __future__ import annotations

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, did_you_mean
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Diagnostic, Severity
from sailplane.model.telemetry import (
    BUILTIN_PROVIDERS,
    MODES,
    AccessLoggingSpec,
    MetricsSpec,
    Mode,
    Telemetry,
    TracingSpec,
)

_UNSUPPORTED = Severity.WARNING


def _providers(r: ObjectReader, path: tuple[str | int, ...]) -> tuple[str, ...] | None:
    if not r.has(path):
        return None
    names = []
    for i, _ in enumerate(r.sequence(path)):
        name = r.string((*path, i, "name"), required=True)
        if name:
            names.append(name)
    return tuple(names)


def _mode(r: ObjectReader, path: tuple[str | int, ...]) -> Mode:
    return r.enum((*path, "mode"), MODES, "CLIENT_AND_SERVER")


def parse_telemetry(r: ObjectReader) -> Telemetry | None:
    check_declared_fields(r)
    for unsupported in ("targetRef", "targetRefs"):
        if r.has(("spec", unsupported)):
            r.report(
                ("spec", unsupported),
                f"{unsupported} (Kubernetes Gateway API) is not supported; use selector",
                _UNSUPPORTED,
            )
    tracing = []
    for i, _ in enumerate(r.sequence(("spec", "tracing"))):
        path: tuple[str | int, ...] = ("spec", "tracing", i)
        if r.has((*path, "customTags")):
            r.report((*path, "customTags"), "customTags are not supported; ignored", _UNSUPPORTED)
        sampling = r.raw((*path, "randomSamplingPercentage"))
        if r.has((*path, "randomSamplingPercentage")) and (
            isinstance(sampling, bool)
            or not isinstance(sampling, (int, float))
            or not 0 <= sampling <= 100
        ):
            r.report(
                (*path, "randomSamplingPercentage"),
                f"randomSamplingPercentage {sampling!r} is not a number from 0 to 100",
                code="IST0106",
            )
            sampling = None
        tracing.append(
            TracingSpec(
                providers=_providers(r, (*path, "providers")),
                sampling=float(sampling) if isinstance(sampling, (int, float)) else None,
                disable_span_reporting=r.boolean((*path, "disableSpanReporting")),
                mode=_mode(r, (*path, "match")),
            )
        )
    if len(tracing) > 1:
        r.report(("spec", "tracing", 1), "only the first tracing entry is used", _UNSUPPORTED)
    logs = []
    for i, _ in enumerate(r.sequence(("spec", "accessLogging"))):
        path = ("spec", "accessLogging", i)
        if r.has((*path, "filter")):
            r.report(
                (*path, "filter"),
                "access log filter expressions are not supported; every request is logged",
                _UNSUPPORTED,
            )
        logs.append(
            AccessLoggingSpec(
                providers=_providers(r, (*path, "providers")),
                disabled=bool(r.boolean((*path, "disabled"))),
                mode=_mode(r, (*path, "match")),
            )
        )
    metrics = []
    for i, _ in enumerate(r.sequence(("spec", "metrics"))):
        path = ("spec", "metrics", i)
        overrides = []
        for j, _ in enumerate(r.sequence((*path, "overrides"))):
            opath = (*path, "overrides", j)
            if any(
                r.has((*opath, *field))
                for field in (("tagOverrides",), ("match", "metric"), ("match", "customMetric"))
            ):
                r.report(
                    opath,
                    "per-metric overrides and tagOverrides are not supported; "
                    "this override applies to every metric",
                    _UNSUPPORTED,
                )
            mode = r.enum((*opath, "match", "mode"), MODES, "CLIENT_AND_SERVER")
            overrides.append((mode, bool(r.boolean((*opath, "disabled")))))
        metrics.append(
            MetricsSpec(
                providers=_providers(r, (*path, "providers")),
                overrides=tuple(overrides),
                reporting_interval=r.duration((*path, "reportingInterval")),
            )
        )
    selector = r.labels(("spec", "selector", "matchLabels"))
    if r.failed:
        return None
    return Telemetry(
        name=r.name,
        namespace=r.namespace,
        source=r.source,
        selector=selector,
        tracing=tuple(tracing),
        access_logging=tuple(logs),
        metrics=tuple(metrics),
    )


def check_telemetry(mesh: MeshConfig) -> list[Diagnostic]:
    """Every provider a Telemetry names must exist (IST0106 as istioctl says)
    and fit its section; the rest of the Telemetry still applies."""
    problems = []
    settings = mesh.settings
    for telemetry in mesh.telemetries:
        sections: list[tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = [
            ("tracing", spec.providers, ("opentelemetry", "zipkin")) for spec in telemetry.tracing
        ]
        sections += [
            ("accessLogging", spec.providers, ("envoyFileAccessLog", "sailplane"))
            for spec in telemetry.access_logging
        ]
        sections += [("metrics", spec.providers, ("prometheus",)) for spec in telemetry.metrics]
        for section, names, kinds in sections:
            for name in names or ():
                provider = settings.provider(name)
                kind = provider.kind if provider else (name if name in BUILTIN_PROVIDERS else "")
                if kind == "envoy":
                    kind = "envoyFileAccessLog"
                if kind in kinds:
                    continue
                names_known = [p.name for p in settings.extension_providers] + list(
                    BUILTIN_PROVIDERS
                )
                message = (
                    f"{section} provider {name!r}{did_you_mean(name, names_known)} is not in "
                    "the mesh's extensionProviders "
                    f"(built-in: {', '.join(BUILTIN_PROVIDERS)})"
                    if not kind
                    else f"{section} provider {name!r} is a {kind} provider; "
                    f"{section} takes {' or '.join(kinds)}; ignored"
                )
                problems.append(
                    Diagnostic(
                        telemetry.source.file,
                        telemetry.source.position,
                        message,
                        obj=f"Telemetry {telemetry.key}",
                        severity=Severity.WARNING,
                        code="IST0106",
                    )
                )
    return problems
