"""``sailplane validate``: every check ``serve`` runs, offline."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from sailplane.cli.common import max_file_size_flag, resolve_config_dir
from sailplane.config.validate import Report
from sailplane.model.source import Diagnostic, Position


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
        "-v", "--verbose", action="store_true", help="also show info lines (skipped kinds)"
    )
    max_file_size_flag(validate)


def run(args: argparse.Namespace) -> int:
    from sailplane.config.validate import EXIT_USAGE, validate_dir

    config_dir = resolve_config_dir(args.config_dir)
    if not config_dir.exists():
        print(f"sailplane: config dir {config_dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    from sailplane.config.loader import max_file_size

    with max_file_size(args.max_file_size):
        report = validate_dir(config_dir, strict=args.strict, verbose=args.verbose)
    report = _self_check(report, config_dir)
    sys.stdout.write(report.json() + "\n" if args.format == "json" else report.text())
    print(f"{config_dir}: {report.summary()}", file=sys.stderr)
    return report.exit_code


def _self_check(report: Report, config_dir: Path) -> Report:
    """Translate what would be served for every workload and check each
    snapshot's consistency; a failure is an error (sailplane's own bug)."""
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
        for proxy, problems in inconsistent_snapshots(mesh)
    ]
    if not found:
        return report
    result = dataclasses.replace(report.result, diagnostics=(*report.result.diagnostics, *found))
    return dataclasses.replace(report, result=result)
