"""``sailplane validate``: every check ``serve`` runs, offline."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sailplane.cli.common import (
    config_store_flag,
    max_file_size_flag,
    read_config_store,
    resolve_config_dir,
)
from sailplane.config.validate import Report
from sailplane.model.source import Diagnostic, Position, Severity

if TYPE_CHECKING:
    from sailplane.model.registry import Workload
    from sailplane.xds import Snapshot


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
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
        "--envoy",
        action="store_true",
        help="also load every proxy's configuration into the real Envoy "
        "(`envoy --mode validate`, from PATH): what Envoy would reject is an error",
    )
    validate.add_argument(
        "--envoy-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time limit of one Envoy validation (default 30)",
    )
    validate.add_argument(
        "-v", "--verbose", action="store_true", help="also show info lines (skipped kinds)"
    )
    max_file_size_flag(validate)
    config_store_flag(validate)


def run(args: argparse.Namespace) -> int:
    from sailplane.config.validate import EXIT_USAGE, validate_dir
    from sailplane.server.selfcheck import proxy_snapshots

    config_dir: Path | str = resolve_config_dir(args.config_dir)
    if args.config_store:
        loaded = _validate_store(args)
        if loaded is None:
            return EXIT_USAGE
        report, config_dir = loaded
    elif not Path(config_dir).exists():
        print(f"sailplane: config dir {config_dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    else:
        from sailplane.config.loader import max_file_size

        with max_file_size(args.max_file_size):
            report = validate_dir(Path(config_dir), strict=args.strict, verbose=args.verbose)
    mesh = report.result.mesh
    snapshots = list(proxy_snapshots(mesh)) if mesh is not None else []
    report = _self_check(report, config_dir, snapshots)
    if args.envoy:
        from sailplane.server.envoycheck import EnvoyNotFound, find_envoy

        try:
            envoy = find_envoy()
        except EnvoyNotFound as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return EXIT_USAGE
        report = _envoy_check(report, config_dir, envoy, args.envoy_timeout, snapshots)
    sys.stdout.write(report.json() + "\n" if args.format == "json" else report.text())
    print(f"{config_dir}: {report.summary()}", file=sys.stderr)
    return report.exit_code


def _validate_store(args: argparse.Namespace) -> tuple[Report, str] | None:
    """The store's objects, validated as a directory's; None when the store is
    not reachable (said on stderr)."""
    from sailplane.config.loader import max_file_size
    from sailplane.config.validate import validate_texts

    if args.config_dir:
        print("sailplane: give --config-dir or --config-store, not both", file=sys.stderr)
        return None
    contents = read_config_store(args.config_store, args.max_file_size)
    if contents is None:
        return None
    with max_file_size(args.max_file_size):
        report = validate_texts(
            contents.texts, contents.unread, strict=args.strict, verbose=args.verbose
        )
    return report, args.config_store


def _self_check(
    report: Report, config_dir: Path | str, snapshots: list[tuple[Workload, Snapshot]]
) -> Report:
    """Check the consistency of each snapshot that would be served
    (``snapshots``: every workload's, by :func:`proxy_snapshots`); a failure
    is an error (sailplane's own bug)."""
    from sailplane.server.selfcheck import inconsistent_snapshots

    mesh = report.result.mesh
    if mesh is None:
        return report
    found = [
        Diagnostic(
            str(config_dir),
            Position(1, 1),
            f"internal error: the snapshot for proxy {proxy} would be inconsistent "
            f"({'; '.join(problems)}); please report this as a sailplane bug",
        )
        for proxy, problems in inconsistent_snapshots(mesh, snapshots)
    ]
    if not found:
        return report
    result = dataclasses.replace(report.result, diagnostics=(*report.result.diagnostics, *found))
    return dataclasses.replace(report, result=result)


def _envoy_check(
    report: Report,
    config_dir: Path | str,
    envoy: str,
    timeout: float,
    snapshots: list[tuple[Workload, Snapshot]],
) -> Report:
    """Every proxy's configuration through ``envoy --mode validate``: each
    rejection an error at the proxy's WorkloadEntry, naming the resource and
    Envoy's message; what was checked with test material an info line."""
    from sailplane.server.envoycheck import check_mesh

    mesh = report.result.mesh
    if mesh is None:
        return report
    rejections, notes = check_mesh(mesh, envoy, timeout=timeout, snapshots=snapshots)
    workloads = mesh.workloads_by_id
    found: list[Diagnostic] = []
    for rejection in rejections:
        first = workloads.get(rejection.proxies[0])
        more = len(rejection.proxies) - 1
        sharing = f" (and {more} more prox{'ies' if more > 1 else 'y'} with the same configuration)"
        what = f" {rejection.resource}" if rejection.resource else ""
        found.append(
            Diagnostic(
                first.source.file if first else str(config_dir),
                first.source.position if first else Position(1, 1),
                f"Envoy rejects{what} of proxy {rejection.proxies[0]}"
                f"{sharing if more else ''}: {rejection.message}",
                obj=f"WorkloadEntry {first.namespace}/{first.name}" if first else "",
            )
        )
    found += [
        Diagnostic(str(config_dir), Position(1, 1), f"envoy check: {note}", severity=Severity.INFO)
        for note in notes
    ]
    if not found:
        return report
    result = dataclasses.replace(report.result, diagnostics=(*report.result.diagnostics, *found))
    return dataclasses.replace(report, result=result)
