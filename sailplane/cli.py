"""The ``sailplane`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sailplane import __version__
from sailplane.translate.proxy import Role, parse_host_port


def _address(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _optional_address(value: str) -> tuple[str, int] | None:
    return None if value == "" else _address(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sailplane",
        description="A service-mesh control plane: Istio YAML in, Envoy xDS out.",
    )
    parser.add_argument("--version", action="version", version=f"sailplane {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve xDS for a watched config directory")
    serve.add_argument(
        "--config-dir",
        type=Path,
        help="directory of mesh YAML (default: the embedded weather example)",
    )
    serve.add_argument(
        "--xds-address",
        type=_optional_address,
        default=("0.0.0.0", 15010),
        help="plaintext ADS address, HOST:PORT ('' turns it off; default 0.0.0.0:15010)",
    )
    serve.add_argument(
        "--monitor-address",
        type=_address,
        default=("0.0.0.0", 15014),
        help="debug and metrics HTTP address (default 0.0.0.0:15014)",
    )
    serve.add_argument(
        "--debounce",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="quiet time before a config change is applied (default 0.1)",
    )
    serve.add_argument(
        "--debounce-max",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="longest a burst of changes can delay a reload (default 1.0)",
    )

    boot = sub.add_parser("bootstrap", help="write the Envoy bootstrap for a workload")
    boot.add_argument("workload", help="WorkloadEntry name")
    boot.add_argument("--namespace", default="default")
    boot.add_argument("--config-dir", type=Path, help="mesh YAML (default: embedded example)")
    boot.add_argument("--xds-address", type=_address, required=True, help="HOST:PORT of sailplane")
    boot.add_argument("--admin-address", type=_address, default=("127.0.0.1", 15000))
    boot.add_argument(
        "--outbound-address",
        type=_address,
        default=("127.0.0.1", 15001),
        help="where the sidecar's HTTP proxy listens (the app's HTTP_PROXY)",
    )
    boot.add_argument(
        "--app-address",
        default="127.0.0.1",
        help="address the app listens on, behind the inbound listeners",
    )
    boot.add_argument("--role", choices=[r.value for r in Role], default=Role.SIDECAR.value)
    boot.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    status = sub.add_parser("status", help="sync state of every connected proxy")
    status.add_argument("--monitor-address", type=_address, default=("127.0.0.1", 15014))
    status.add_argument("--json", action="store_true", help="print /debug/syncz as JSON")
    return parser


def _config_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    from sailplane.app import embedded_example

    return embedded_example()


def cmd_serve(args: argparse.Namespace) -> int:
    from sailplane.app import ServeOptions, serve_forever

    config_dir = _config_dir(args.config_dir)
    if not config_dir.exists():
        print(f"sailplane: config dir {config_dir} does not exist", file=sys.stderr)
        return 2
    options = ServeOptions(
        config_dir=config_dir,
        xds_address=args.xds_address,
        monitor_address=args.monitor_address,
        debounce_quiet=args.debounce,
        debounce_max=args.debounce_max,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(options))
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from sailplane.bootstrap import bootstrap_yaml, build_bootstrap
    from sailplane.config.loader import load_dir

    result = load_dir(_config_dir(args.config_dir))
    if result.mesh is None:
        for diagnostic in result.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
        return 1
    node_id = f"{args.workload}.{args.namespace}"
    workload = result.mesh.workloads_by_id.get(node_id)
    if workload is None:
        known = ", ".join(w.id for w in result.mesh.workloads) or "none"
        print(
            f"sailplane: no WorkloadEntry {args.namespace}/{args.workload} (known: {known})",
            file=sys.stderr,
        )
        return 1
    text = bootstrap_yaml(
        build_bootstrap(
            workload,
            xds_address=args.xds_address,
            admin_address=args.admin_address,
            outbound_address=args.outbound_address,
            app_address=args.app_address,
            role=Role(args.role),
        )
    )
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def fetch_json(address: tuple[str, int], path: str) -> Any:
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    with urllib.request.urlopen(f"http://{host}:{address[1]}{path}", timeout=10) as response:
        return json.load(response)


def format_status(streams: list[dict[str, Any]]) -> str:
    """A table like ``istioctl proxy-status``."""
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
                cells.append("NOT SENT")
                continue
            cells.append(info["state"].replace("_", " "))
            if info.get("sent"):
                versions.append(info["sent"][:6])
        rows.append([stream["proxy"], *cells, "/".join(versions)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    errors = [
        f"  {stream['proxy']} {key}: {info['error']}"
        for stream in streams
        for key, info in stream["types"].items()
        if info.get("error")
    ]
    if errors:
        lines += ["", "NACKs:", *errors]
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    try:
        streams = fetch_json(args.monitor_address, "/debug/syncz")
    except (urllib.error.URLError, OSError) as exc:
        host, port = args.monitor_address
        print(f"sailplane: cannot reach the monitor at {host}:{port}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(streams, indent=2))
    else:
        sys.stdout.write(format_status(streams))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchdog").setLevel(logging.INFO)
    logging.getLogger("grpc").setLevel(logging.INFO)
    handlers = {"serve": cmd_serve, "bootstrap": cmd_bootstrap, "status": cmd_status}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
