"""Parse ``Sidecar`` and the mesh settings (the ``istio`` ConfigMap of the root
namespace, key ``mesh``, as Istio keeps them)."""

from __future__ import annotations

from typing import Any

import yaml

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.locality import parse_locality_lb
from sailplane.config.reader import ObjectReader, did_you_mean
from sailplane.config.sidecar_ingress import parse_ingress
from sailplane.model.locality import DEFAULT_LOCALITY_LB, LocalityLbSetting
from sailplane.model.sidecar import (
    OUTBOUND_MODES,
    MeshSettings,
    OutboundMode,
    Provider,
    Sidecar,
)
from sailplane.model.source import Severity

MESH_CONFIGMAP = "istio"
_PROVIDER_KINDS = (
    "opentelemetry",
    "zipkin",
    "envoyFileAccessLog",
    "envoyOtelAls",
    "prometheus",
    "envoyHttpAls",
    "envoyTcpAls",
    "skywalking",
    "datadog",
)


def parse_sidecar(r: ObjectReader) -> Sidecar | None:
    check_declared_fields(r)
    ingress = parse_ingress(r)
    egress_hosts: list[tuple[str, str]] | None = None
    egress = r.sequence(("spec", "egress"))
    if egress:
        egress_hosts = []
        for i, _ in enumerate(egress):
            for j, host in enumerate(r.sequence(("spec", "egress", i, "hosts"), required=True)):
                text = str(host)
                namespace, slash, name = text.partition("/")
                if not slash or not namespace or not name:
                    r.report(
                        ("spec", "egress", i, "hosts", j),
                        f"egress host {text!r} must be NAMESPACE/HOST (e.g. ./*, istio-system/*)",
                        code="IST0106",
                    )
                    continue
                egress_hosts.append((namespace, name))
    mode: OutboundMode | None = None
    if r.has(("spec", "outboundTrafficPolicy")):
        mode = r.enum(("spec", "outboundTrafficPolicy", "mode"), OUTBOUND_MODES, "ALLOW_ANY")
    if r.failed:
        return None
    return Sidecar(
        name=r.name,
        namespace=r.namespace,
        source=r.source,
        selector=r.labels(("spec", "workloadSelector", "labels")),
        egress_hosts=None if egress_hosts is None else tuple(egress_hosts),
        outbound_mode=mode,
        ingress=ingress,
    )


def parse_mesh_settings(r: ObjectReader) -> MeshSettings | None:
    """``data.mesh`` of the ``istio`` ConfigMap: a YAML document in a string."""
    text = r.string(("data", "mesh"))
    if text is None:
        return MeshSettings(root_namespace=r.namespace, source=r.source)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        r.report(("data", "mesh"), f"mesh config is not valid YAML: {exc}")
        return None
    if not isinstance(raw, dict):
        r.report(("data", "mesh"), "mesh config must be a mapping")
        return None
    where = ("data", "mesh")

    def bad(message: str) -> None:
        r.report(where, message, code="IST0106")

    given = str((raw.get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY"))
    outbound: OutboundMode = "ALLOW_ANY"
    if given in OUTBOUND_MODES:
        outbound = given
    else:
        bad(
            f"outboundTrafficPolicy.mode {given!r}{did_you_mean(given, OUTBOUND_MODES)} is not "
            f"one of {', '.join(OUTBOUND_MODES)}"
        )
    encoding = str(raw.get("accessLogEncoding", "TEXT")).upper()
    if encoding not in ("TEXT", "JSON"):
        bad(f"accessLogEncoding {encoding!r} is not TEXT or JSON")
        encoding = "TEXT"
    providers = []
    for item in raw.get("extensionProviders") or []:
        provider = _provider(item, bad)
        if provider is not None:
            providers.append(provider)
    defaults: dict[str, Any] = raw.get("defaultProviders") or {}
    tracing = (raw.get("defaultConfig") or {}).get("tracing") or {}
    sampling = tracing.get("sampling", 1.0)
    if not isinstance(sampling, (int, float)) or not 0 <= sampling <= 100:
        bad(f"defaultConfig.tracing.sampling {sampling!r} is not a percentage")
        sampling = 1.0
    known = {
        "rootNamespace",
        "outboundTrafficPolicy",
        "accessLogFile",
        "accessLogEncoding",
        "accessLogFormat",
        "enableTracing",
        "defaultConfig",
        "extensionProviders",
        "defaultProviders",
        "trustDomain",
        "enableAutoMtls",
        "localityLbSetting",
        "h2UpgradePolicy",
    }
    for key in raw:
        if key not in known:
            r.report(
                where,
                f"mesh config field {key!r}{did_you_mean(str(key), known)} "
                "is not used by sailplane",
                Severity.WARNING,
            )
    return MeshSettings(
        root_namespace=str(raw.get("rootNamespace") or r.namespace),
        outbound_mode=outbound,
        access_log_file=str(raw.get("accessLogFile") or ""),
        access_log_encoding=encoding,
        access_log_format=str(raw.get("accessLogFormat") or ""),
        enable_tracing=bool(raw.get("enableTracing", False)),
        tracing_sampling=float(sampling),
        extension_providers=tuple(providers),
        default_tracing=tuple(str(x) for x in defaults.get("tracing") or ()),
        default_access_logging=tuple(str(x) for x in defaults.get("accessLogging") or ()),
        default_metrics=tuple(str(x) for x in defaults.get("metrics") or ()),
        locality_lb=_mesh_locality_lb(raw, bad),
        h2_upgrade_policy="UPGRADE" if _h2_upgrade(raw, bad) else "DO_NOT_UPGRADE",
        source=r.source,
    )


def _h2_upgrade(raw: dict[str, Any], bad: Any) -> bool:
    """MeshConfig.h2UpgradePolicy: DO_NOT_UPGRADE (the default) or UPGRADE."""
    value = raw.get("h2UpgradePolicy", "DO_NOT_UPGRADE")
    if value not in ("DO_NOT_UPGRADE", "UPGRADE"):
        bad(f"h2UpgradePolicy {value!r} is not DO_NOT_UPGRADE or UPGRADE")
    return bool(value == "UPGRADE")


def _mesh_locality_lb(raw: dict[str, Any], bad: Any) -> LocalityLbSetting | None:
    """MeshConfig.localityLbSetting replaces Istio's default (enabled);
    ``enabled: false`` turns locality load balancing off mesh-wide."""
    if "localityLbSetting" not in raw:
        return DEFAULT_LOCALITY_LB
    setting = parse_locality_lb(
        raw["localityLbSetting"],
        lambda _, message, severity: (
            bad(f"localityLbSetting: {message}") if severity is Severity.ERROR else None
        ),
        has_outlier=True,  # the rules' own outlierDetection decides
    )
    if setting is None:  # reported
        return DEFAULT_LOCALITY_LB
    return None if setting.enabled is False else setting


def _provider(item: Any, bad: Any) -> Provider | None:
    if not isinstance(item, dict) or "name" not in item:
        bad("every extensionProviders entry needs a name")
        return None
    kinds = [k for k in item if k in _PROVIDER_KINDS]
    if len(kinds) != 1:
        bad(
            f"extension provider {item.get('name')!r} needs exactly one of "
            f"{', '.join(_PROVIDER_KINDS)}"
        )
        return None
    kind = kinds[0]
    body = item[kind] or {}
    if not isinstance(body, dict):
        bad(f"extension provider {item['name']!r}: {kind} must be a mapping")
        return None
    log_format = body.get("logFormat") or {}
    encoding = "JSON" if isinstance(log_format, dict) and "labels" in log_format else "TEXT"
    labels = log_format.get("labels") if isinstance(log_format, dict) else None
    return Provider(
        name=str(item["name"]),
        kind=kind,
        service=str(body.get("service", "")),
        port=int(body.get("port", 0) or 0),
        path=str(body.get("path", "")),
        encoding=encoding,
        format=str(log_format.get("text", "")) if isinstance(log_format, dict) else "",
        log_name=str(body.get("logName", "")) if kind == "envoyOtelAls" else "",
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        if kind == "envoyOtelAls" and isinstance(labels, dict)
        else (),
    )
