"""Results: the JSON document, the table, and the comparison of two runs.

A result document is ``{"schema", "created", "machine", "params",
"scenarios": {scenario: {metric: value}}}``. Metric values are numbers,
strings, booleans or nested dicts of those; units are in the metric names
(``_ms``, ``_s``, ``_mb``, ``_kb``, ``_bytes``) so a comparison never
mixes them up.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

SCHEMA = 1
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def rss_metrics() -> dict[str, float]:
    """This process: peak RSS (``ru_maxrss``, KiB on Linux) and current RSS."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    current_kb = 0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current_kb = int(line.split()[1])
    # The kernel updates the high-water mark lazily; it can trail VmRSS a little.
    return {"peak_mb": max(peak_kb, current_kb) / 1024, "current_mb": current_kb / 1024}


def machine() -> dict[str, Any]:
    import grpc
    from google.protobuf.internal import api_implementation

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "grpcio": grpc.__version__,
        "protobuf": api_implementation.Type(),
    }


def document(params: Mapping[str, Any], scenarios: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "params": dict(params),
        "scenarios": dict(scenarios),
    }


def write_json(doc: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def flatten(scenarios: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``("fanout.push_ms", 123.4)``, nested dicts joined with dots."""
    for key, value in scenarios.items():
        if isinstance(value, Mapping):
            for sub, leaf in flatten(value):
                yield f"{key}.{sub}", leaf
        else:
            yield key, value


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def headline(doc: Mapping[str, Any]) -> list[str]:
    """The numbers the harness exists for, in words."""
    scenarios, params = doc["scenarios"], doc["params"]
    lines = []
    if "translate" in scenarios:
        t = scenarios["translate"]
        lines.append(
            f"snapshot for 1 proxy, {params['services']} services x {params['ports']} ports "
            f"(load + apply + snapshot_for): {_format(t['ms'])} ms, median of {t['repeat']}"
        )
    if "fanout" in scenarios:
        f = scenarios["fanout"]
        lines.append(
            f"push one change ({f['change']}) to {f['proxies']} ADS streams until all ACK: "
            f"{_format(f['push_ms'])} ms (Controller.apply {_format(f['push_apply_ms'])} ms, "
            f"{_format(f['push_bytes_per_proxy'] / 1024)} KiB per stream); "
            f"cold start of all streams: {_format(f['cold_sync_ms'])} ms"
        )
        per_type = ", ".join(
            f"{short} {f['push_encoded_by_type'].get(short, 0):,} encoded / {sent:,} delivered"
            for short, sent in f["push_delivered_by_type"].items()
            if sent
        )
        lines.append(
            f"serialised in the push: {f['push_resources_encoded']:,} resources for "
            f"{f['push_resources_delivered']:,} delivered ({per_type})"
        )
    if "rss" in scenarios:
        r = scenarios["rss"]
        lines.append(
            f"server RSS: peak {_format(r['peak_mb'])} MB, after the push "
            f"{_format(r['after_push_mb'])} MB ({_format(r['per_proxy_kb'])} KiB per stream)"
        )
    return lines


def print_table(doc: Mapping[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    params = ", ".join(f"{k}={v}" for k, v in doc["params"].items())
    out.write(f"sailplane benchmarks ({params})\n")
    for line in headline(doc):
        out.write(f"  {line}\n")
    out.write("metrics:\n")
    rows = [(name, _format(value)) for name, value in flatten(doc["scenarios"])]
    width = max((len(name) for name, _ in rows), default=0)
    for name, text in rows:
        out.write(f"  {name:<{width}}  {text:>14}\n")


def compare(new: Mapping[str, Any], old: Mapping[str, Any], out: TextIO | None = None) -> None:
    """Print new/old per numeric metric; > 1 means the number grew."""
    out = out or sys.stdout
    old_metrics = dict(flatten(old["scenarios"]))
    out.write(f"{'metric':<44} {'old':>14} {'new':>14} {'new/old':>8}\n")
    for name, value in flatten(new["scenarios"]):
        before = old_metrics.get(name)
        numeric = (
            isinstance(value, int | float)
            and isinstance(before, int | float)
            and not isinstance(value, bool)
        )
        if not numeric:
            continue
        ratio = f"{value / before:.2f}" if before else "-"
        out.write(f"{name:<44} {_format(before):>14} {_format(value):>14} {ratio:>8}\n")
    if new["params"] != old["params"]:
        out.write(f"note: parameters differ: old {old['params']} new {new['params']}\n")
