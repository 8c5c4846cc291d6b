"""Parse ``telemetry.istio.io/v1`` Telemetry (istio.io/latest/docs/reference/
config/telemetry) and check its provider names against the mesh settings."""

from __future__ import annotations

from sailplane.config.cel import CelSyntaxError, check_cel
from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, did_you_mean
from sailplane.config.telemetry_metrics import parse_metrics, read_providers
from sailplane.model.mesh import MeshConfig
from sailplane.model.sidecar import Provider
from sailplane.model.source import Diagnostic, FieldPath, Severity
from sailplane.model.telemetry import (
    BUILTIN_PROVIDERS,
    MODES,
    SAILPLANE_PROVIDER,
    TAG_SOURCES,
    AccessLoggingSpec,
    CustomTag,
    Mode,
    Telemetry,
    TracingSpec,
)

_UNSUPPORTED = Severity.WARNING


def _mode(r: ObjectReader, path: tuple[str | int, ...]) -> Mode:
    return r.enum((*path, "mode"), MODES, "CLIENT_AND_SERVER")


def _custom_tags(r: ObjectReader, path: FieldPath) -> tuple[CustomTag, ...] | None:
    """``customTags``, checked as Istio's validateTelemetryTracing and Envoy's
    CustomTag rules check them."""
    tags = r.mapping(path)
    if tags is None:
        return None
    out = []
    for name in tags:
        tag_path = (*path, str(name))
        sources = [s for s in TAG_SOURCES if r.has((*tag_path, s))]
        if len(sources) != 1:
            r.report(
                tag_path,
                f"custom tag {name!r} needs exactly one of {', '.join(TAG_SOURCES)}",
                code="IST0106",
            )
            continue
        source = sources[0]
        key = "name" if source in ("environment", "header") else "value"
        value = r.string((*tag_path, source, key)) or ""
        if not value:
            r.report(
                (*tag_path, source, key), f"{source} tag {key} may not be empty", code="IST0106"
            )
            continue
        if source == "header" and any(c in value for c in "\0\r\n"):
            # Envoy's HTTP_HEADER_NAME rule, not strict (custom_tag.proto): a NACK.
            r.report(
                (*tag_path, source, key),
                f"{value!r} is not an HTTP header name (Envoy would reject the listener); "
                "this tag is left out",
                _UNSUPPORTED,
            )
            continue
        default = r.string((*tag_path, source, "defaultValue")) or ""
        out.append(CustomTag(str(name), source, value, default))
    return tuple(out)


def _log_filter(r: ObjectReader, path: FieldPath) -> str:
    """``accessLogging[].filter.expression``: Envoy NACKs a listener whose CEL
    filter does not parse (Istio passes it on unchecked), so its syntax is
    checked here (:mod:`sailplane.config.cel`) and a bad one fails the object."""
    expression = r.string(path)
    if expression is None:
        return ""
    try:
        check_cel(expression)
    except CelSyntaxError as e:
        r.report(path, f"access log filter {expression!r} is not a CEL expression Envoy takes: {e}")
        return ""
    return expression.strip()


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
                providers=read_providers(r, (*path, "providers")),
                sampling=float(sampling) if isinstance(sampling, (int, float)) else None,
                disable_span_reporting=r.boolean((*path, "disableSpanReporting")),
                mode=_mode(r, (*path, "match")),
                custom_tags=_custom_tags(r, (*path, "customTags")),
            )
        )
    if len(tracing) > 1:
        r.report(("spec", "tracing", 1), "only the first tracing entry is used", _UNSUPPORTED)
    logs = []
    for i, _ in enumerate(r.sequence(("spec", "accessLogging"))):
        path = ("spec", "accessLogging", i)
        logs.append(
            AccessLoggingSpec(
                providers=read_providers(r, (*path, "providers")),
                disabled=bool(r.boolean((*path, "disabled"))),
                mode=_mode(r, (*path, "match")),
                filter=_log_filter(r, (*path, "filter", "expression")),
            )
        )
    metrics = parse_metrics(r)
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
            ("accessLogging", spec.providers, ("envoyFileAccessLog", "envoyOtelAls", "sailplane"))
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
        problems += _unfiltered(mesh, telemetry)
    return problems


def _unfiltered(mesh: MeshConfig, telemetry: Telemetry) -> list[Diagnostic]:
    """A filter on the ``sailplane`` provider: its stream is the one the
    metrics count, so it is never filtered."""
    settings = mesh.settings
    return [
        Diagnostic(
            telemetry.source.file,
            telemetry.source.position,
            f"accessLogging provider {name!r} (sailplane's stream, which the metrics count) "
            "takes no filter; every request is logged there",
            obj=f"Telemetry {telemetry.key}",
            severity=Severity.WARNING,
        )
        for spec in telemetry.access_logging
        if spec.filter
        for name in spec.providers or settings.default_access_logging
        if (settings.provider(name) or Provider(name, name)).kind == SAILPLANE_PROVIDER
    ]
