"""``python -m benchmarks``: run the scenarios, print a table, write JSON;
``python -m benchmarks peer``: the peer comparison (:mod:`benchmarks.peer`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.peer import parse_peer_args
from benchmarks.peer import run as run_peer
from benchmarks.report import DEFAULT_JSON, compare, document, print_table, write_json
from benchmarks.scenarios import SCENARIOS, Params, run

# Small enough for CI (the whole suite runs it), large enough to exercise
# every path: subsets, routes, many streams on several channels.
QUICK = Params(services=50, ports=1, workloads=2, subsets=2, proxies=100, changes=3, repeat=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer"]:  # ``python -m benchmarks peer``: benchmarks/peer.py
        return parse_peer_args(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="sailplane performance harness: translation, cold start, file save to "
        "every proxy SYNCED, bytes per push, CPU, RSS.",
        epilog="python -m benchmarks peer [N] [M] ...: side by side with a peer control plane "
        "(see python -m benchmarks peer --help and benchmarks/README.md).",
    )
    defaults = Params()
    parser.add_argument("--services", type=int, help=f"services (default {defaults.services})")
    parser.add_argument("--ports", type=int, help=f"ports per service (default {defaults.ports})")
    parser.add_argument(
        "--workloads", type=int, help=f"workloads per service (default {defaults.workloads})"
    )
    parser.add_argument(
        "--subsets",
        type=int,
        help=f"DestinationRule subsets per service, with a weighted VirtualService "
        f"(default {defaults.subsets})",
    )
    parser.add_argument(
        "--proxies", type=int, help=f"simulated ADS streams (default {defaults.proxies})"
    )
    parser.add_argument(
        "--per-connection",
        type=int,
        help=f"simulated proxies per HTTP/2 connection (default {defaults.per_connection})",
    )
    parser.add_argument(
        "--delta", action="store_true", default=None, help="simulated proxies use delta xDS"
    )
    parser.add_argument(
        "--changes",
        type=int,
        help=f"saves of each kind of change, for p50/p99 (default {defaults.changes})",
    )
    parser.add_argument(
        "--repeat", type=int, help=f"translation runs, median reported (default {defaults.repeat})"
    )
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="run only this scenario"
    )
    parser.add_argument(
        "--abuse",
        action="store_true",
        help="run only the abuse scenario: a responsive proxy's push latency with "
        f"--abusers never-ACKing streams connected (default {defaults.abusers})",
    )
    parser.add_argument(
        "--abusers", type=int, help=f"never-ACKing streams (default {defaults.abusers})"
    )
    parser.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"write results here (default {DEFAULT_JSON})",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="JSON",
        help="OLD.json: run, then print new/old per metric; OLD.json NEW.json: compare only",
    )
    return parser.parse_args(argv)


def params_from(args: argparse.Namespace) -> Params:
    params = QUICK if args.quick else Params()
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Params)
        if getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(params, **given)


def _read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if getattr(args, "peer", False):
        return run_peer(args)
    if args.compare and len(args.compare) > 2:
        print("--compare takes OLD.json, or OLD.json NEW.json", file=sys.stderr)
        return 2
    if args.compare and len(args.compare) == 2:
        compare(_read(Path(args.compare[1])), _read(Path(args.compare[0])))
        return 0
    params = params_from(args)
    only = [*(args.only or []), *(["abuse"] if args.abuse else [])]
    doc = document(dataclasses.asdict(params), run(params, only or None))
    print_table(doc)
    write_json(doc, args.json)
    print(f"wrote {args.json}")
    if args.compare:
        compare(doc, _read(Path(args.compare[0])))
    return 0
