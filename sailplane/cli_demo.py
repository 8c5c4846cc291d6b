"""``sailplane demo`` and ``sailplane bootstrap --all``: the command-line side.

The work happens in :mod:`sailplane.demo`; this module only declares flags
and turns them into calls, so that ``cli.py`` stays a list of commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sailplane import cli_ca
from sailplane.ca import CAError, CertificateAuthority
from sailplane.model.registry import Workload
from sailplane.secure import BootstrapCredentials

# -- sailplane bootstrap --all ------------------------------------------------


def add_bootstrap_flags(boot: argparse.ArgumentParser) -> None:
    boot.add_argument(
        "--all",
        action="store_true",
        help="write the bootstrap of every WorkloadEntry into the directory -o names, as "
        "NAME.NAMESPACE.yaml (bootstraps written there for workloads that are gone are removed)",
    )
    boot.add_argument(
        "--cert-dir",
        type=Path,
        help="the directory in which the proxy finds the certificate files, if "
        "not where they are written (a volume mounted elsewhere in a container)",
    )
    boot.add_argument(
        "--no-credentials",
        action="store_true",
        help="name the certificate files without minting them (something "
        "else mints them, as the compose file's sailplane-init service does)",
    )


def _check_bootstrap_flags(args: argparse.Namespace) -> str | None:
    if (args.cert_dir or args.no_credentials) and not args.secure:
        return "--cert-dir and --no-credentials do not go with --plaintext"
    if args.all and args.workload:
        return "give a WORKLOAD or --all, not both"
    if not args.all and not args.workload:
        return "give a WORKLOAD (a WorkloadEntry name) or --all"
    if args.all and args.output is None:
        return "--all writes one file per workload: give the directory with -o DIR"
    return None


def bootstrap_credentials(
    args: argparse.Namespace, workload: Workload, out_dir: Path
) -> BootstrapCredentials:
    """The credentials a --secure bootstrap names (minted unless
    --no-credentials). Raises CAError when the CA cannot be loaded."""
    from sailplane.demo.bootstraps import mint_credentials, named_credentials

    if args.no_credentials:
        return named_credentials(workload, args.cert_dir or out_dir, args.trust_domain)
    return mint_credentials(cli_ca.authority_from_args(args), workload, out_dir, args.cert_dir)


def cmd_bootstrap_all(args: argparse.Namespace) -> int:
    from sailplane.config.loader import load_dir
    from sailplane.demo.bootstraps import write_mesh_bootstraps

    config_dir = args.config_dir or _embedded_example()
    result = load_dir(config_dir)
    if result.mesh is None:
        for diagnostic in result.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
        return 1
    authority = None
    if args.secure and not args.no_credentials:
        try:
            authority = cli_ca.authority_from_args(args)
        except CAError as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return 1
    written = write_mesh_bootstraps(
        result.mesh,
        args.output,
        args.xds_address,
        authority=authority,
        cert_dir=args.cert_dir,
        trust_domain=args.trust_domain,
        secure=args.secure,
    )
    for path in written:
        print(path)
    return 0


def check_bootstrap_args(args: argparse.Namespace) -> int | None:
    """Exit status for bad flag combinations (after printing why), else None."""
    problem = _check_bootstrap_flags(args)
    if problem is None:
        return None
    print(f"sailplane bootstrap: {problem}", file=sys.stderr)
    return 2


def _embedded_example() -> Path:
    from sailplane.app import embedded_example

    return embedded_example()


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
        description="Start the weather mesh without containers or privileges: sailplane, the "
        "apps and one Envoy per WorkloadEntry, each workload on its own 127.x.y.z address, "
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
        "with YAML is used as it is (WorkloadEntry addresses must be 127.x.y.z)",
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
    cli_ca.add_ca_flags(demo)
    for action in demo._actions:
        if action.dest == "ca_dir":
            action.help = (
                "CA state directory, created on first use (default: a new CA in the "
                "demo's temporary directory, gone when it stops)"
            )


def cmd_demo(args: argparse.Namespace) -> int:
    from sailplane.demo.run import DemoOptions, run_demo

    # The demo's CA lives and dies with its temporary directory, unless the
    # user names one: a demo must not create (or reuse) the default CA.
    authority = None
    if args.ca_dir is not None or args.ca_cert or args.ca_key:
        try:
            authority = cli_ca.authority_from_args(args)
        except CAError as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return 2

    def new_authority(directory: Path) -> CertificateAuthority:
        return cli_ca.authority_from_args(argparse.Namespace(**{**vars(args), "ca_dir": directory}))

    options = DemoOptions(
        config_dir=args.config_dir,
        duration=args.duration,
        rate=args.rate,
        plain=args.plain or not sys.stdout.isatty(),
        authority=authority,
        new_authority=new_authority,
    )
    return run_demo(options)
