"""Plain-text tables for the ``sailplane`` command: one proxy's resources
(``status --proxy``, like ``istioctl proxy-config``) and dry-run diffs
(``diff``). Pure functions from the monitor's JSON to text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TYPE_ORDER = ("clusters", "endpoints", "listeners", "routes", "secrets")


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_proxy(view: dict[str, Any]) -> str:
    streams = view.get("streams") or []
    state = f"connected, {len(streams)} stream{'s' * (len(streams) != 1)}"
    lines = [f"PROXY {view['proxy']} ({state if view.get('connected') else 'not connected'})"]
    for kind in TYPE_ORDER:
        info = view["types"].get(kind)
        if info is None:
            continue
        type_state = info.get("state", "NOT_SENT")
        header = f"{kind.upper()}  version {info.get('version') or '-'}  {type_state}"
        if info.get("acked") and info.get("acked") != info.get("sent"):
            header += f" (proxy has {info['acked']})"
        lines += ["", header]
        if info.get("error"):
            lines.append(f"  NACK: {info['error']}")
        resources = info.get("resources") or []
        rows = [["NAME", "VERSION", "STATE"]] + [
            [r["name"], r["version"], type_state] for r in resources
        ]
        lines += table(rows, "  ") if resources else ["  (none)"]
    return "\n".join(lines) + "\n"


def format_diff(result: dict[str, Any]) -> str:
    lines = []
    for d in result.get("diagnostics") or []:
        where = f"{d['file']}:{d['line']}:{d['column']}:"
        severity = "" if d["severity"] == "error" else f" {d['severity']}:"
        code = f" {d['code']}:" if d.get("code") else ""
        obj = f" {d['object']}:" if d.get("object") else ""
        field = f" {d['field']}:" if d.get("field") else ""
        lines.append(f"{where}{severity}{code}{obj}{field} {d['message']}")
    if result.get("verdict") == "rejected":
        lines.append("would be rejected: the directory does not parse; nothing would change")
        return "\n".join(lines) + "\n"
    errors = diff_error_count(result)
    if errors:
        lines.append(
            f"{errors} error{'s' * (errors != 1)}: the objects with errors would not be "
            "applied (an earlier good version stays in force)"
        )
    if result.get("verdict") == "unchanged":
        lines.append("no change: this is the configuration in force")
        return "\n".join(lines) + "\n"
    objects = result.get("objects") or []
    lines.append(f"objects: {len(objects)} changed")
    signs = {"add": "+", "delete": "-", "update": "~"}
    lines += [f"  {signs.get(o['event'], '?')} {o['kind']} {o['name']}" for o in objects]
    proxies = result.get("proxies") or []
    changed = [p for p in proxies if p.get("changes") or p.get("error")]
    lines.append(f"proxies: {len(changed)} of {len(proxies)} connected would change")
    for proxy in proxies:
        if proxy.get("error"):
            lines.append(f"  {proxy['proxy']}: {proxy['error']}")
            continue
        changes = proxy.get("changes") or {}
        if not changes:
            lines.append(f"  {proxy['proxy']}: no change")
            continue
        lines.append(f"  {proxy['proxy']}:")
        for kind in TYPE_ORDER:
            change = changes.get(kind)
            if not change:
                continue
            for sign, key in (("+", "added"), ("-", "removed"), ("~", "changed")):
                lines += [f"    {sign} {kind[:-1]} {name}" for name in change.get(key, [])]
    return "\n".join(lines) + "\n"


def diff_error_count(result: dict[str, Any]) -> int:
    """Errors in the directory a dry run read (objects with errors would be
    left out, or keep their last good version)."""
    return sum(1 for d in result.get("diagnostics") or [] if d.get("severity") == "error")


def diff_has_changes(result: dict[str, Any]) -> bool:
    """Whether applying would change anything (objects or any proxy)."""
    if result.get("verdict") != "would apply":
        return False
    proxies = result.get("proxies") or []
    return bool(result.get("objects")) or any(p.get("changes") or p.get("error") for p in proxies)
