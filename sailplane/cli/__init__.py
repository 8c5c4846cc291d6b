"""The ``sailplane`` command: one module per subcommand.

Each subcommand module has ``register(sub, common)``, which declares its
flags, and ``run(args) -> int``, which does the work and returns the exit
status. ``common.py`` holds what they share, ``tables.py`` the plain-text
tables. Work is imported inside ``run``, so ``sailplane --help`` stays fast.

May import every package of sailplane; nothing imports ``cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from sailplane import __version__
from sailplane.cli import (
    apply,
    bootstrap,
    ca,
    capture,
    delete,
    demo,
    diff,
    get,
    serve,
    status,
    validate,
)
from sailplane.cli.common import logging_flags

COMMANDS = {
    "serve": serve,
    "bootstrap": bootstrap,
    "status": status,
    "validate": validate,
    "diff": diff,
    "ca": ca,
    "demo": demo,
    "capture": capture,
    "apply": apply,
    "get": get,
    "delete": delete,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sailplane",
        description="A service-mesh control plane: Istio YAML in, Envoy xDS out.",
        epilog="Exit status, for CI and pre-commit hooks: 0 success, 1 errors, 2 usage "
        "(bad flags, a missing directory). `sailplane validate`: 0 valid, 1 errors, "
        "2 usage; `sailplane diff`: 0 no change, 1 changes, 2 errors (see their --help).",
    )
    parser.add_argument("--version", action="version", version=f"sailplane {__version__}")
    logging_flags(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    logging_flags(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for command in COMMANDS.values():
        command.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sailplane.logs import configure

    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    run: Callable[[argparse.Namespace], int] = COMMANDS[args.command].run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
