"""``sailplane apply``: validate files and write the valid objects to the
configuration store in one transaction (like ``kubectl apply``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sailplane.cli.common import config_store_flag, max_file_size_flag, open_config_store


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    apply = sub.add_parser(
        "apply",
        parents=[common],
        help="validate YAML and write the valid objects to the config store (one transaction)",
        description="Validate the objects of FILE or DIR against what the store holds, "
        "exactly as `sailplane validate` does, and write the valid ones to the store in one "
        "transaction. Exit status: 0 all written, 1 some rejected (the valid ones are "
        "written), 2 the store is unreachable or usage.",
    )
    apply.add_argument(
        "-f", "--filename", type=Path, required=True, help="a YAML file or directory"
    )
    apply.add_argument(
        "--prune",
        action="store_true",
        help="also delete the store's objects that are not in FILE|DIR (same transaction)",
    )
    config_store_flag(apply, required=True)
    max_file_size_flag(apply)


def run(args: argparse.Namespace) -> int:
    from sailplane.errors import StoreError
    from sailplane.store.apply import commit, diagnostic_in_file, plan_apply

    if not args.filename.exists():
        print(f"sailplane: {args.filename} does not exist", file=sys.stderr)
        return 2
    store = open_config_store(args.config_store, args.max_file_size)
    if store is None:
        return 2
    try:
        plan = plan_apply(store, args.filename, prune=args.prune)
        for problem in plan.problems:
            print(problem.format(), file=sys.stderr)
        if plan.writes:
            commit(store, plan)
    except StoreError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 2
    finally:
        store.stop()
    for outcome in plan.outcomes:
        obj = outcome.obj
        print(f"{obj.kind.lower()} {obj.namespace}/{obj.name} {outcome.action}")
        if outcome.action in ("rejected", "refused"):
            for diagnostic in outcome.diagnostics:
                print(f"  {diagnostic_in_file(diagnostic, obj)}", file=sys.stderr)
    for path in plan.pruned:
        kind, namespace, name = path.split("/")
        print(f"{kind.lower()} {namespace}/{name} pruned")
    return 1 if plan.failed else 0
