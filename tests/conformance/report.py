"""Every Istio object of the corpus with its actual verdict and what
sailplane said about it; with ``--envoy``, Envoy's rejections too.

    python -m tests.conformance.report [--envoy] [--only-wrong] [FILTER]

FILTER keeps the rows whose file or object contains it (``docs-traffic``,
``VirtualService``, ``25-sni``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.conformance.harness import CORPUS, evaluate_all, load_cases
from tests.conformance.scoreboard import envoy_rejections, failure_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.report")
    parser.add_argument("filter", nargs="?", default="")
    parser.add_argument("--envoy", action="store_true", help="also run Envoy's check")
    parser.add_argument("--only-wrong", action="store_true", help="only what differs")
    args = parser.parse_args(argv)
    if not CORPUS.is_dir():
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 2
    cases = [c for c in load_cases() if args.filter in c.id or not args.filter]
    if args.filter and not cases:  # an object filter: every file, rows filtered below
        cases = load_cases()
    with tempfile.TemporaryDirectory(prefix="sailplane-conformance-") as scratch:
        results = evaluate_all(cases, CORPUS, Path(scratch))
    rows = [
        v
        for r in results
        for v in r.verdicts
        if (not args.filter or args.filter in v.case or args.filter in v.obj)
        and (v.actual != v.expected or not args.only_wrong)
    ]
    for v in rows:
        mark = "  " if v.ok else "!!"
        print(f"{mark} {v.case:58} {v.obj:62} {v.actual:9} (expected {v.expected})")
        if v.detail:
            print(f"     {v.detail}")
    for r in results:
        for problem in r.problems:
            print(f"!! {r.case.id:58} {problem}")
    counts = Counter(v.actual for v in rows)
    print(f"\n{len(rows)} objects: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    table = failure_table(results)
    if args.envoy:
        for files, rejection in envoy_rejections(results):
            print(f"!! Envoy: {', '.join(files)}: {rejection.format()}")
    return 1 if table else 0


if __name__ == "__main__":
    sys.exit(main())
