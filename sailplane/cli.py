"""The ``sailplane`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from sailplane import __version__, cli_ca, cli_demo
from sailplane.ca import CAError
from sailplane.translate.proxy import Role, parse_host_port


def _address(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _optional_address(value: str) -> tuple[str, int] | None:
    return None if value == "" else _address(value)


LOG_LEVELS = ["debug", "info", "warning", "error"]


def _logging_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """--log-level and --log-format, before or after the command."""
    parser.add_argument(
        "--log-level",
        default=default or "info",
        choices=LOG_LEVELS,
        help="least severe log lines shown (default info)",
    )
    parser.add_argument(
        "--log-format",
        default=default or "text",
        choices=["text", "json"],
        help="text (default, for people) or json (one object per line, for collectors)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sailplane",
        description="A service-mesh control plane: Istio YAML in, Envoy xDS out.",
        epilog="Exit status, for CI and pre-commit hooks: 0 success, 1 errors, 2 usage "
        "(bad flags, a missing directory). `sailplane validate`: 0 valid, 1 errors, "
        "2 usage; `sailplane diff`: 0 no change, 1 changes, 2 errors (see their --help).",
    )
    parser.add_argument("--version", action="version", version=f"sailplane {__version__}")
    _logging_flags(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _logging_flags(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", parents=[common], help="serve xDS for a watched config directory"
    )
    serve.add_argument(
        "--config-dir",
        type=Path,
        help="directory of mesh YAML (default: the embedded weather example)",
    )
    serve.add_argument(
        "--xds-address",
        type=_optional_address,
        default=("127.0.0.1", 15010),
        help="plaintext ADS address, HOST:PORT: configuration only, never secrets ('' turns "
        "it off; default 127.0.0.1:15010)",
    )
    serve.add_argument(
        "--monitor-address",
        type=_address,
        default=("127.0.0.1", 15014),
        help="debug and metrics HTTP address, unauthenticated (default 127.0.0.1:15014)",
    )
    serve.add_argument(
        "--debounce",
        "--debounce-quiet",
        dest="debounce",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="quiet time before a config change is applied (default 0.1)",
    )
    serve.add_argument(
        "--secure-xds-address",
        type=_optional_address,
        default=("0.0.0.0", 15012),
        help="mTLS ADS address, HOST:PORT: configuration and each proxy's own secrets "
        "('' turns it off; default 0.0.0.0:15012)",
    )
    serve.add_argument(
        "--cert-ttl",
        type=cli_ca.cert_ttl,
        default=timedelta(hours=24),
        help="workload certificate lifetime; rotated at half of it (default 24h)",
    )
    cli_ca.add_ca_flags(serve)
    serve.add_argument(
        "--access-log-file",
        default="-",
        metavar="PATH",
        help="where the `sailplane` access log provider writes JSON lines ('-': stdout)",
    )
    serve.add_argument(
        "--debounce-max",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="longest a burst of changes can delay a reload (default 1.0)",
    )
    _max_file_size_flag(serve)

    boot = sub.add_parser(
        "bootstrap", parents=[common], help="write the Envoy bootstrap for a workload"
    )
    boot.add_argument("workload", nargs="?", help="WorkloadEntry name (or --all)")
    boot.add_argument(
        "--namespace", default="default", help="the WorkloadEntry's namespace (default: default)"
    )
    boot.add_argument("--config-dir", type=Path, help="mesh YAML (default: embedded example)")
    boot.add_argument(
        "--xds-address",
        type=_address,
        required=True,
        help="HOST:PORT of sailplane's mTLS xDS port (15012; with --plaintext, 15010)",
    )
    boot.add_argument(
        "--admin-address",
        type=_address,
        default=("127.0.0.1", 15000),
        help="where Envoy's admin interface listens (default 127.0.0.1:15000)",
    )
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
    boot.add_argument(
        "--role",
        choices=[r.value for r in Role],
        help="force a role (default: the control plane decides; a workload a Gateway "
        "selects is a gateway)",
    )
    boot.add_argument(
        "--secure",
        action="store_true",
        default=True,
        help="the default: use the mTLS xDS port; writes the workload's bootstrap "
        "certificate, minted by the CA, next to the bootstrap",
    )
    boot.add_argument(
        "--plaintext",
        dest="secure",
        action="store_false",
        help="use the plaintext xDS port instead: no credentials, and so no secrets (the "
        "proxy cannot serve or call mTLS); for a laptop mesh without mTLS only",
    )
    boot.add_argument(
        "--delta",
        action="store_true",
        help="use incremental xDS (DELTA_GRPC) instead of state of the world",
    )
    cli_demo.add_bootstrap_flags(boot)
    cli_ca.add_ca_flags(boot)
    boot.add_argument("-o", "--output", type=Path, help="file (with --all: directory) to write")

    status = sub.add_parser(
        "status",
        parents=[common],
        help="sync state of every connected proxy, or one proxy's resources",
    )
    status.add_argument(
        "--monitor-address",
        type=_address,
        default=("127.0.0.1", 15014),
        help="the running server's monitor port, HOST:PORT (default 127.0.0.1:15014)",
    )
    status.add_argument(
        "--proxy",
        metavar="ID",
        help="show this proxy's clusters, endpoints, listeners, routes and secrets, like "
        "istioctl proxy-config: NAME.NAMESPACE, or NAME for one in namespace default",
    )
    status.add_argument("--json", action="store_true", help="print the monitor's JSON")

    validate = sub.add_parser(
        "validate",
        parents=[common],
        help="check a config directory offline (exit 0 valid, 1 errors, 2 usage)",
        description="Run every check `sailplane serve` runs, without serving, and show "
        "every problem of every object. Exit status: 0 valid (warnings allowed unless "
        "--strict), 1 errors (or no mesh object at all: an empty or wrong --config-dir), "
        "2 usage (bad flags, missing directory).",
    )
    validate.add_argument(
        "--config-dir", type=Path, help="directory of mesh YAML (default: the embedded example)"
    )
    validate.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text (one line per problem, default) or json (problems and every object's state)",
    )
    validate.add_argument("--strict", action="store_true", help="warnings fail too")
    validate.add_argument(
        "-v", "--verbose", action="store_true", help="also show info lines (skipped kinds)"
    )
    _max_file_size_flag(validate)

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
    diff.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory of mesh YAML to compare with the configuration in force (required)",
    )
    diff.add_argument(
        "--monitor-address",
        type=_address,
        default=("127.0.0.1", 15014),
        help="the running server's monitor port, HOST:PORT (default 127.0.0.1:15014)",
    )
    diff.add_argument("--json", action="store_true", help="print the monitor's JSON")
    cli_ca.register(sub, common)
    cli_demo.register(sub, common)
    return parser


def _size(value: str) -> int:
    """``8388608``, ``512K``, ``8M``, ``1G`` (powers of 1024) -> bytes."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        size = int(float(text[:-1] if factor > 1 else text) * factor)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (e.g. 8M, 512K)") from exc
    if size <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (e.g. 8M, 512K)")
    return size


def _max_file_size_flag(parser: argparse.ArgumentParser) -> None:
    from sailplane.config.loader import DEFAULT_MAX_FILE_SIZE

    parser.add_argument(
        "--max-file-size",
        type=_size,
        default=DEFAULT_MAX_FILE_SIZE,
        metavar="SIZE",
        help="larger config files are an error and are not read, e.g. 8M, 512K "
        f"(default {DEFAULT_MAX_FILE_SIZE >> 20}M)",
    )


def _config_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    from sailplane.app import embedded_example

    return embedded_example()


def cmd_serve(args: argparse.Namespace) -> int:
    from sailplane.app import ServeOptions, serve_forever
    from sailplane.ports import PortInUseError

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
        secure_xds_address=args.secure_xds_address,
        cert_ttl=args.cert_ttl,
        access_log_file=args.access_log_file,
        max_file_size=args.max_file_size,
    )
    try:
        options.authority = cli_ca.authority_from_args(args)
    except CAError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_forever(options))
    except PortInUseError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from sailplane.bootstrap import bootstrap_yaml, build_bootstrap
    from sailplane.config.loader import load_dir

    problem = cli_demo.check_bootstrap_args(args)
    if problem is not None or args.all:
        return problem if problem is not None else cli_demo.cmd_bootstrap_all(args)
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
    credentials = None
    if args.secure:
        directory = args.output.parent if args.output else Path.cwd()
        try:
            credentials = cli_demo.bootstrap_credentials(args, workload, directory)
        except CAError as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return 1
    text = bootstrap_yaml(
        build_bootstrap(
            workload,
            xds_address=args.xds_address,
            admin_address=args.admin_address,
            outbound_address=args.outbound_address,
            app_address=args.app_address,
            role=Role(args.role) if args.role else None,
            credentials=credentials,
            delta=args.delta,
        )
    )
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def fetch_json(address: tuple[str, int], path: str, body: Any = None) -> Any:
    """GET (or, with ``body``, POST as JSON) a monitor endpoint; its JSON answer,
    also for 4xx answers that carry JSON."""
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{host}:{address[1]}{path}",
        data=data,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if "json" in (exc.headers.get("Content-Type") or ""):
            return json.load(exc)
        raise


def _unreachable(address: tuple[str, int], exc: Exception) -> int:
    host, port = address
    print(f"sailplane: cannot reach the monitor at {host}:{port}: {exc}", file=sys.stderr)
    return 2


def format_status(streams: list[dict[str, Any]]) -> str:
    """A table like ``istioctl proxy-status``; sync states as the monitor
    spells them (SYNCED, STALE, NACKED, NOT_SENT, REFUSED)."""
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
    from urllib.parse import quote

    from sailplane.tables import format_proxy

    path = f"/debug/proxyz?proxy={quote(args.proxy)}" if args.proxy else "/debug/syncz"
    try:
        answer = fetch_json(args.monitor_address, path)
        if args.proxy and "error" in answer and "." not in args.proxy:
            # NAME alone is NAME.default, as `sailplane bootstrap NAME` means.
            retry = fetch_json(args.monitor_address, f"{path}{quote('.default')}")
            answer = answer if "error" in retry else retry
    except (urllib.error.URLError, OSError) as exc:
        _unreachable(args.monitor_address, exc)
        return 1
    if args.proxy and "error" in answer:
        known = ", ".join(answer.get("connected") or []) or "none"
        print(f"sailplane: {answer['error']} (connected: {known})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.proxy:
        sys.stdout.write(format_proxy(answer))
    else:
        sys.stdout.write(format_status(answer))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sailplane.config.validate import EXIT_USAGE, validate_dir

    config_dir = _config_dir(args.config_dir)
    if not config_dir.exists():
        print(f"sailplane: config dir {config_dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    from sailplane.config.loader import max_file_size

    with max_file_size(args.max_file_size):
        report = validate_dir(config_dir, strict=args.strict, verbose=args.verbose)
    sys.stdout.write(report.json() + "\n" if args.format == "json" else report.text())
    print(f"{config_dir}: {report.summary()}", file=sys.stderr)
    return report.exit_code


def cmd_diff(args: argparse.Namespace) -> int:
    from sailplane.config.loader import config_files, display_name
    from sailplane.tables import diff_error_count, diff_has_changes, format_diff

    root: Path = args.config_dir
    if not root.exists():
        print(f"sailplane: config dir {root} does not exist", file=sys.stderr)
        return 2
    try:
        files = {display_name(p, root): p.read_text(encoding="utf-8") for p in config_files(root)}
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sailplane: cannot read {root}: {exc}", file=sys.stderr)
        return 2
    try:
        answer = fetch_json(args.monitor_address, "/debug/diff", {"files": files})
    except (urllib.error.URLError, OSError) as exc:
        return _unreachable(args.monitor_address, exc)
    if "error" in answer:
        print(f"sailplane: {answer['error']}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(answer, indent=2) + "\n" if args.json else format_diff(answer))
    if answer.get("verdict") == "rejected" or diff_error_count(answer):
        return 2
    return 1 if diff_has_changes(answer) else 0


def main(argv: list[str] | None = None) -> int:
    from sailplane.logs import configure

    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    handlers = {
        "serve": cmd_serve,
        "bootstrap": cmd_bootstrap,
        "status": cmd_status,
        "validate": cmd_validate,
        "diff": cmd_diff,
        "ca": cli_ca.cmd_ca,
        "demo": cli_demo.cmd_demo,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
