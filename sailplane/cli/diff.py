"""``sailplane diff``: what applying a directory would change on the running
server (a dry run on its monitor port)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
from pathlib import Path
from typing import Any

from sailplane.cli.common import (
    fetch_json,
    monitor_address_flag,
    read_config_store,
    unreachable,
)
from sailplane.cli.tables import TYPE_ORDER


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    diff = sub.add_parser(
        "diff",
        parents=[common],
        help="what applying a directory would change on the running server (dry run)",
        description="Send DIR to the running server's monitor port as a dry run and show "
        "which objects, proxies and resources would change; nothing is applied. Exit "
        "status (kubectl diff's convention): 0 no change, 1 changes, 2 errors: DIR has "
        "errors (the objects with errors would not be applied; see `sailplane validate`) "
        "or does not parse, or the server cannot be reached; also bad flags.",
    )
    source = diff.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config-dir",
        type=Path,
        metavar="DIR",
        help="directory of mesh YAML to compare with the configuration in force",
    )
    source.add_argument(
        "--config-store",
        metavar="URL",
        help="or the configuration in etcd, etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: "
        "what a replica would serve once it has read the store",
    )
    monitor_address_flag(diff)
    diff.add_argument("--json", action="store_true", help="print the monitor's JSON")


def run(args: argparse.Namespace) -> int:
    files = _store_files(args.config_store) if args.config_store else _dir_files(args.config_dir)
    if files is None:
        return 2
    try:
        answer = fetch_json(args.monitor_address, "/debug/diff", {"files": files})
    except (urllib.error.URLError, OSError) as exc:
        return unreachable(args.monitor_address, exc)
    if "error" in answer:
        print(f"sailplane: {answer['error']}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(answer, indent=2) + "\n" if args.json else format_diff(answer))
    if answer.get("verdict") == "rejected" or diff_error_count(answer):
        return 2
    return 1 if diff_has_changes(answer) else 0


def _dir_files(root: Path) -> dict[str, str] | None:
    """Every YAML file of ``root`` by the name a load gives it; None after saying why not."""
    from sailplane.config.loader import config_files, display_name

    if not root.exists():
        print(f"sailplane: config dir {root} does not exist", file=sys.stderr)
        return None
    try:
        return {display_name(p, root): p.read_text(encoding="utf-8") for p in config_files(root)}
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sailplane: cannot read {root}: {exc}", file=sys.stderr)
        return None


def _store_files(url: str) -> dict[str, str] | None:
    """The store's objects as a load names them; None after saying why not
    (unreachable, or entries that are not objects, which fail a load)."""
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE

    contents = read_config_store(url, DEFAULT_MAX_FILE_SIZE)
    if contents is None:
        return None
    for problem in contents.unread:
        print(problem.format(), file=sys.stderr)
    return None if contents.unread else dict(contents.texts)


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
