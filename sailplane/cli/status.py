"""``sailplane status``: sync state of every connected proxy (like ``istioctl
proxy-status``), or one proxy's resources (like ``istioctl proxy-config``);
with ``--config-store``, every replica on the store and every proxy of the
mesh with the replica serving it (store/replicas.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sailplane.cli.common import (
    fetch_json,
    monitor_address_flag,
    open_config_store,
    unreachable,
)
from sailplane.cli.tables import TYPE_ORDER, table

if TYPE_CHECKING:
    from sailplane.store.replicas import MeshStatus


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    status = sub.add_parser(
        "status",
        parents=[common],
        help="sync state of every connected proxy, or one proxy's resources",
    )
    monitor_address_flag(status)
    status.add_argument(
        "--proxy",
        metavar="ID",
        help="show this proxy's clusters, endpoints, listeners, routes and secrets, like "
        "istioctl proxy-config: NAME.NAMESPACE, or NAME for one in namespace default",
    )
    status.add_argument("--json", action="store_true", help="print the monitor's JSON")
    status.add_argument(
        "--config-store",
        metavar="URL",
        help="every replica on this etcd store (etcd://HOST:PORT[,...][/PREFIX]) and every "
        "proxy of the mesh with the replica serving it, from the store (no monitor needed)",
    )


def format_status(streams: list[dict[str, Any]]) -> str:
    """A table like ``istioctl proxy-status``; sync states as the monitor
    spells them (SYNCED, STALE, NACKED, NOT_SENT, REFUSED, MISSING)."""
    if not streams:
        return "no proxy is connected\n"
    columns = [
        ("clusters", "CDS"),
        ("listeners", "LDS"),
        ("endpoints", "EDS"),
        ("routes", "RDS"),
        ("secrets", "SDS"),
    ]
    rows = [["NAME", *(label for _, label in columns), "VERSION"]]
    for stream in streams:
        cells = []
        versions = []
        for key, _ in columns:
            info = stream["types"].get(key)
            if info is None:
                cells.append("NOT_SENT")
                continue
            cells.append(info["state"])
            if info.get("sent"):
                versions.append(info["sent"][:6])
        rows.append([stream["proxy"], *cells, "/".join(versions)])
    lines = table(rows)
    errors = [
        f"  {stream['proxy']} {key}: {info['error']}"
        for stream in streams
        for key, info in stream["types"].items()
        if info.get("error")
    ]
    if errors:
        lines += ["", "NACKs:", *errors]
    missing = [
        f"  {stream['proxy']} {key}: MISSING {' '.join(info['missing'])}"
        for stream in streams
        for key, info in stream["types"].items()
        if info.get("missing")
    ]
    if missing:
        lines += ["", "Asked for, not there:", *missing]
    return "\n".join(lines) + "\n"


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
        if info.get("missing"):
            lines.append(f"  MISSING: {' '.join(info['missing'])}")
        resources = info.get("resources") or []
        rows = [["NAME", "VERSION", "STATE"]] + [
            [r["name"], r["version"], type_state] for r in resources
        ]
        lines += table(rows, "  ") if resources else ["  (none)"]
    return "\n".join(lines) + "\n"


def format_mesh(mesh: MeshStatus, now: float) -> str:
    """Replicas, then proxies with the replica serving each."""
    served = Counter(p.replica for p in mesh.proxies)
    rows = [["REPLICA", "XDS", "SECURE XDS", "MONITOR", "VERSION", "PROXIES", "ALIVE"]]
    for live in mesh.replicas:
        r = live.record
        alive = f"yes (lease {live.lease_ttl}s)" if live.alive else "no (lease expired)"
        if r.store_problem:
            alive += "; store down"
        cells = [r.xds_address, r.secure_xds_address, r.monitor_address]
        rows.append([r.name, *(c or "-" for c in cells), r.version or "-", str(served[r.name])])
        rows[-1].append(alive)
    lines = table(rows) if mesh.replicas else ["no replica is registered"]
    if mesh.proxies:
        known = {live.record.name for live in mesh.replicas}
        rows = [["PROXY", "REPLICA", "CONNECTED", "PEER", "XDS"]]
        for proxy in sorted(mesh.proxies, key=lambda p: (p.node_id, p.replica)):
            replica = proxy.replica if proxy.replica in known else f"{proxy.replica} (gone)"
            since = f"{max(now - proxy.connected_at, 0):.0f}s ago"
            rows.append([proxy.node_id, replica, since, proxy.peer, _protocol(proxy.delta)])
        lines += ["", *table(rows)]
    else:
        lines += ["", "no proxy is connected"]
    lines += [f"warning: {key}: not a replica or proxy record" for key in mesh.unreadable]
    return "\n".join(lines) + "\n"


def _protocol(delta: bool) -> str:
    return "delta" if delta else "sotw"


def mesh_json(mesh: MeshStatus) -> dict[str, Any]:
    return {
        "revision": mesh.revision,
        "replicas": [
            {**asdict(live.record), "alive": live.alive, "lease_ttl": live.lease_ttl}
            for live in mesh.replicas
        ],
        "proxies": [{**asdict(p), "xds": _protocol(p.delta)} for p in mesh.proxies],
    }


def run_store_status(args: argparse.Namespace) -> int:
    """``status --config-store``: from etcd; exit 2 when it is unreachable."""
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE
    from sailplane.errors import StoreError
    from sailplane.store.replicas import read_mesh

    store = open_config_store(args.config_store, DEFAULT_MAX_FILE_SIZE)
    if store is None:
        return 2
    try:
        mesh = read_mesh(store.client, store.url.prefix)
    except StoreError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 2
    finally:
        store.stop()
    if args.json:
        print(json.dumps(mesh_json(mesh), indent=2))
    else:
        sys.stdout.write(format_mesh(mesh, time.time()))
    return 0


def run(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    if args.config_store:
        return run_store_status(args)

    path = f"/debug/proxyz?proxy={quote(args.proxy)}" if args.proxy else "/debug/syncz"
    try:
        answer = fetch_json(args.monitor_address, path)
        if args.proxy and "error" in answer and "." not in args.proxy:
            # NAME alone is NAME.default, as `sailplane bootstrap NAME` means.
            retry = fetch_json(args.monitor_address, f"{path}{quote('.default')}")
            answer = answer if "error" in retry else retry
    except (urllib.error.URLError, OSError) as exc:
        unreachable(args.monitor_address, exc)
        return 1
    if args.proxy and "error" in answer:
        known = ", ".join(answer.get("connected") or []) or "none"
        print(f"sailplane: {answer['error']} (connected: {known})", file=sys.stderr)
        return 1
    store_down = _store_problem(args.monitor_address)
    if store_down:  # what is served is the last good configuration
        print(f"sailplane: {store_down}", file=sys.stderr)
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.proxy:
        sys.stdout.write(format_proxy(answer))
    else:
        sys.stdout.write(format_status(answer))
    return 0


def _store_problem(address: tuple[str, int]) -> str:
    """Why the server's configuration store cannot be read now, if it has
    one and that is so (``/debug/configz``), else ""."""
    try:
        config = fetch_json(address, "/debug/configz")
    except (urllib.error.URLError, OSError, ValueError):
        return ""
    store = config.get("config_store") if isinstance(config, dict) else None
    if not isinstance(store, dict) or store.get("up", True):
        return ""
    return (
        f"the config store {store.get('url')} is down ({store.get('problem')}); "
        f"the proxies are served the last good configuration, version {config.get('version')}"
    )
