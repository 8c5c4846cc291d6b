"""``python -m benchmarks.one NAME PARAMS``: one scenario, in a process of its
own (see :func:`benchmarks.scenarios.run`); prints its sections as one JSON line."""

from __future__ import annotations

import json
import sys

from benchmarks.scenarios import SCENARIOS, Params


def main(argv: list[str]) -> None:
    name, params = argv
    sections = SCENARIOS[name](Params(**json.loads(params)))
    sys.stdout.write(json.dumps(sections) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
