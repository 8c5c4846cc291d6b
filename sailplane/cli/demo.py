"""``sailplane demo``: the command-line side.

The work happens in :mod:`sailplane.demo`; this module only declares flags
and turns them into calls, so that ``cli.py`` stays a list of commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sailplane.ca import CAError, CertificateAuthority
from sailplane.cli import ca

# -- sailplane demo ---------------------------------------------------------


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("give a positive number of seconds")
    return seconds


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run the weather mesh on this machine: control plane, apps, one Envoy per "
        "workload, ingress gateway, legacy client, and a live view",
        description="Start the weather mesh without containers: sailplane, the apps and one "
        "Envoy per WorkloadEntry, each workload on its own 127.x.y.z address (or, as root, in "
        "a network namespace of its own with iptables capture), "
        "an ingress gateway and a legacy client without a sidecar. Shows requests per second "
        "through the ingress, the share per backend version, the mTLS state per service and "
        "the last configuration change, every second. Edit the YAML in the config dir it "
        "prints and watch the view follow. Ctrl-C stops everything it started.",
    )
    demo.add_argument(
        "--config-dir",
        type=Path,
        help="mesh YAML to run and watch. Default: a copy of the weather example in a "
        "temporary directory. An empty or missing DIR gets that copy and keeps it; a DIR "
        "with YAML is used as it is (WorkloadEntry addresses must be 127.x.y.z, or for "
        "transparent capture private addresses A.B.C.K on one /24, K from 11)",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help="stop after SECONDS of traffic (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--rate",
        type=_seconds,
        default=50.0,
        metavar="PER_SECOND",
        help="requests per second the demo sends through the ingress (default 50)",
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="one plain line per second instead of the live view (the default without a terminal)",
    )
    demo.add_argument(
        "--capture",
        choices=["auto", "transparent", "proxy"],
        default="auto",
        help="how the apps' traffic reaches their sidecars: transparent (each workload in a "
        "network namespace of its own, iptables redirect as Istio's; needs root), proxy (the "
        "apps use their sidecar's HTTP proxy; no privileges), or auto (default): transparent "
        "when run as root, else proxy. The demo says which",
    )
    ca.add_ca_flags(demo)
    for action in demo._actions:
        if action.dest == "ca_dir":
            action.help = (
                "CA state directory, created on first use (default: a new CA in the "
                "demo's temporary directory, gone when it stops)"
            )


def run(args: argparse.Namespace) -> int:
    from sailplane.demo.capturemode import CaptureChoice
    from sailplane.demo.run import DemoOptions, run_demo

    # The demo's CA lives and dies with its temporary directory, unless the
    # user names one: a demo must not create (or reuse) the default CA.
    authority = None
    if args.ca_dir is not None or args.ca_cert or args.ca_key:
        try:
            authority = ca.authority_from_args(args)
        except CAError as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return 2

    def new_authority(directory: Path) -> CertificateAuthority:
        return ca.authority_from_args(argparse.Namespace(**{**vars(args), "ca_dir": directory}))

    options = DemoOptions(
        config_dir=args.config_dir,
        duration=args.duration,
        rate=args.rate,
        plain=args.plain or not sys.stdout.isatty(),
        capture=CaptureChoice(args.capture),
        authority=authority,
        new_authority=new_authority,
    )
    return run_demo(options)
