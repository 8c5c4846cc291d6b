"""Parse ``localityLbSetting`` (a DestinationRule's loadBalancer, or the mesh
config's default) with Istio's checks (pkg/config/validation/agent
``ValidateLocalityLbSetting``). Works on the raw YAML value, so the
DestinationRule parser and the mesh config (a YAML string) share it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sailplane.model.locality import LocalityDistribute, LocalityLbSetting
from sailplane.model.registry import REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL
from sailplane.model.source import FieldPath, Severity

# (path under localityLbSetting, message, severity)
Report = Callable[[FieldPath, str, Severity], None]


def parse_locality_lb(raw: Any, report: Report, has_outlier: bool) -> LocalityLbSetting | None:
    """The setting, or None (with errors reported) when Istio would reject it.
    ``has_outlier``: the same traffic policy sets outlierDetection (failover
    needs it; Istio warns, and does not fail over, without it)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        report((), "must be a mapping", Severity.ERROR)
        return None
    errors: list[str] = []

    def error(path: FieldPath, message: str) -> None:
        errors.append(message)
        report(path, message, Severity.ERROR)

    enabled = raw.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        error(("enabled",), "must be true or false")
        enabled = None
    distribute = _distribute(raw.get("distribute"), error)
    failover = _failover(raw.get("failover"), error)
    priority = raw.get("failoverPriority") or []
    if not isinstance(priority, list) or not all(isinstance(p, str) for p in priority):
        error(("failoverPriority",), "must be a list of label names")
        priority = []
    if distribute and failover:
        error((), "can not simultaneously specify 'distribute' and 'failover'")
    if failover:
        for i, name in enumerate(priority):
            if name in (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL):
                error(
                    ("failoverPriority", i),
                    f"can not simultaneously set 'failover' and topology label {name!r} "
                    "in 'failoverPriority'",
                )
    if (failover or priority) and not has_outlier:
        report(
            (),
            "outlier detection policy must be provided for failover "
            "(without it, Istio and sailplane do not fail over)",
            Severity.WARNING,
        )
    if errors:
        return None
    return LocalityLbSetting(enabled, distribute, failover, tuple(priority))


def _distribute(
    raw: Any, error: Callable[[FieldPath, str], None]
) -> tuple[LocalityDistribute, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        error(("distribute",), "must be a list")
        return ()
    out = []
    sources = []
    for i, item in enumerate(raw):
        here: FieldPath = ("distribute", i)
        if not isinstance(item, dict) or not isinstance(item.get("from"), str):
            error(here, "needs 'from' (a locality) and 'to' (locality: weight)")
            continue
        to = item.get("to") or {}
        if not isinstance(to, dict):
            error((*here, "to"), "must map localities to weights")
            continue
        weights: list[tuple[str, int]] = []
        for locality, weight in to.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
                error((*here, "to", locality), "locality weight must be in range [1, 100]")
                continue
            weights.append((str(locality), weight))
        if sum(w for _, w in weights) != 100 and len(weights) == len(to):
            error((*here, "to"), f"total locality weight {sum(w for _, w in weights)} != 100")
        _check_localities([loc for loc, _ in weights], (*here, "to"), error)
        sources.append(item["from"])
        out.append(LocalityDistribute(item["from"], tuple(weights)))
    _check_localities(sources, ("distribute",), error)
    return tuple(out)


def _failover(raw: Any, error: Callable[[FieldPath, str], None]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        error(("failover",), "must be a list")
        return ()
    out = []
    for i, item in enumerate(raw):
        here: FieldPath = ("failover", i)
        if not isinstance(item, dict):
            error(here, "needs 'from' and 'to' (regions)")
            continue
        source, target = str(item.get("from") or ""), str(item.get("to") or "")
        if source == target:
            error(here, "locality lb failover settings must specify different regions")
        if "/" in source or "/" in target:
            error(here, "locality lb failover only specify region")
        if "*" in source or "*" in target:
            error(here, "locality lb failover region should not contain '*' wildcard")
        out.append((source, target))
    return tuple(out)


def _check_localities(
    localities: list[str], path: FieldPath, error: Callable[[FieldPath, str], None]
) -> None:
    """validateLocalities: one ``*``, last; no empty part; no overlap."""
    seen: list[tuple[str, ...]] = []
    for locality in localities:
        stars = locality.count("*")
        if stars > 1 or (stars and not locality.endswith("*")):
            error(
                path,
                f"locality {locality} wildcard '*' number can not exceed 1 and must be in the end",
            )
            return
        parts = tuple(p for p in locality.split("/"))
        if stars:
            parts = parts[:-1]
        if any(not p for p in parts) or len(parts) > 3:
            error(path, f"locality {locality} must not contain empty region/zone/subzone info")
            return
        for earlier in seen:
            shorter = min(len(earlier), len(parts))
            if earlier[:shorter] == parts[:shorter]:
                error(path, f"locality {locality} overlap with previous specified ones")
                return
        seen.append(parts)
