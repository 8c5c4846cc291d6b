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
    scenarios, p = doc["scenarios"], doc["params"]
    mesh = (
        f"{p['services']:,} services x {p['ports']} port(s) x {p['subsets']} subsets, "
        f"{p['services'] * p['workloads']:,} workloads"
    )
    lines = []
    if "translate" in scenarios:
        t = scenarios["translate"]
        lines.append(
            f"{mesh}: load {_format(t['load_ms'])} ms, full translation {_format(t['full_ms'])} ms"
        )
        for change in ("weight", "endpoint"):
            if f"{change}_ms" in t:
                lines.append(
                    f"  one {change} change: {_format(t[f'{change}_ms'])} ms "
                    f"({t[f'{change}_translation']}; encoded {t[f'{change}_encoded']}, "
                    f"{t[f'{change}_virtual_hosts_built']} virtual hosts built)"
                )
    if "fanout" in scenarios:
        f = scenarios["fanout"]
        lines.append(
            f"{f['proxies']:,} {f['protocol']} proxies: cold start to all SYNCED "
            f"{_format(f['cold_sync_ms'] / 1000)} s ({_format(f['cold_server_cpu_s'])} CPU s, "
            f"{_format(f['cold_bytes'] / 2**20)} MiB sent)"
        )
        for change in ("weight", "endpoint"):
            c = scenarios.get(f"change_{change}")
            if c is None:
                continue
            lines.append(
                f"  {change} change, file save to all SYNCED: p50 "
                f"{_format(c['save_to_synced_p50_ms'])} ms, p99 "
                f"{_format(c['save_to_synced_p99_ms'])} ms over {c['changes']} "
                f"(applied after {_format(c.get('save_to_applied_p50_ms', 0))} ms); "
                f"pushed {', '.join(c['types_pushed'])}, "
                f"{_format(c['bytes_per_proxy_per_change'] / 1024)} KiB per proxy"
            )
    if "abuse" in scenarios:
        lines.append(
            f"a responsive proxy's route push with {scenarios['abuse']['abusers']:,} "
            "never-ACKing streams (config change -> proxy received):"
        )
        for phase in ("quiet", "attack", "after"):
            a = scenarios.get(f"abuse_{phase}")
            if a is not None:
                envoy = (
                    f"; a real Envoy ACKed it: p50 {_format(a['envoy_change_to_acked_p50_ms'])}"
                    f" ms, max {_format(a['envoy_change_to_acked_max_ms'])} ms"
                    if "envoy_change_to_acked_p50_ms" in a
                    else ""
                )
                lines.append(
                    f"  {phase}: p50 {_format(a['change_to_received_p50_ms'])} ms, max "
                    f"{_format(a['change_to_received_max_ms'])} ms over {a['changes']} "
                    f"({_format(a['response_bytes'] / 1024)} KiB each){envoy}"
                )
    if "rss" in scenarios:
        r = scenarios["rss"]
        lines.append(
            f"control plane RSS: peak {_format(r['peak_mb'])} MB, after cold start "
            f"{_format(r['after_cold_start_mb'])} MB ({_format(r['per_proxy_kb'])} KiB per proxy)"
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
