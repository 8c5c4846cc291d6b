"""``sailplane bootstrap``: the Envoy bootstrap of one workload, or of all (``--all``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sailplane.ca import CAError
from sailplane.cli import ca
from sailplane.cli.common import config_store_flag, host_port, load_configuration
from sailplane.config.reader import regex_problem
from sailplane.model.registry import StatsInclusion, Workload
from sailplane.translate.bootstrap import BootstrapCredentials
from sailplane.translate.proxy import Capture, Role

CAPTURE_MODES = {"transparent": Capture.TRANSPARENT, "proxy": Capture.PROXY}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    boot = sub.add_parser(
        "bootstrap", parents=[common], help="write the Envoy bootstrap for a workload"
    )
    boot.add_argument("workload", nargs="?", help="WorkloadEntry name (or --all)")
    boot.add_argument(
        "--namespace", default="default", help="the WorkloadEntry's namespace (default: default)"
    )
    boot.add_argument("--config-dir", type=Path, help="mesh YAML (default: embedded example)")
    config_store_flag(boot)
    boot.add_argument(
        "--xds-address",
        type=host_port,
        required=True,
        action="append",
        help="HOST:PORT of sailplane's mTLS xDS port (15012; with --plaintext, 15010); "
        "repeat it for each replica of the control plane: the proxy reconnects to another "
        "when its replica is gone (a DNS name with several addresses works too)",
    )
    boot.add_argument(
        "--admin-address",
        type=host_port,
        default=("127.0.0.1", 15000),
        help="where Envoy's admin interface listens (default 127.0.0.1:15000)",
    )
    boot.add_argument(
        "--outbound-address",
        type=host_port,
        default=("127.0.0.1", 15001),
        help="where the sidecar's HTTP proxy listens (the app's HTTP_PROXY)",
    )
    boot.add_argument(
        "--app-address",
        default="127.0.0.1",
        help="address the app listens on, behind the inbound listeners",
    )
    boot.add_argument(
        "--capture",
        choices=sorted(CAPTURE_MODES),
        help="how the sidecar gets its app's traffic: 'transparent' (iptables, `sailplane "
        "capture`; no HTTP proxy) or 'proxy' (the app's HTTP_PROXY); default: the "
        "WorkloadEntry's sidecar.istio.io/interceptionMode annotation (REDIRECT or NONE), "
        "else proxy",
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
        "--grpc",
        action="store_true",
        help="write a gRPC xDS bootstrap (JSON, for GRPC_XDS_BOOTSTRAP) for a proxyless "
        "gRPC application instead of an Envoy bootstrap (without --plaintext: tls xDS "
        "credentials and the file_watcher certificate provider of the mesh's mTLS)",
    )
    boot.add_argument(
        "--delta",
        action="store_true",
        help="use incremental xDS (DELTA_GRPC) instead of state of the world",
    )
    for kind in ("prefixes", "suffixes", "regexps"):
        boot.add_argument(
            f"--stats-inclusion-{kind}",
            metavar="LIST",
            default="",
            help=f"comma-separated {kind} of Envoy stats to keep besides the defaults, as the "
            f"WorkloadEntry's sidecar.istio.io/statsInclusion{kind.title()} annotation "
            "(which they add to); the outbound clusters' stats are not kept otherwise",
        )
    _all_flags(boot)
    ca.add_ca_flags(boot)
    boot.add_argument("-o", "--output", type=Path, help="file (with --all: directory) to write")


def run(args: argparse.Namespace) -> int:
    from sailplane.translate.bootstrap import bootstrap_yaml, build_bootstrap
    from sailplane.translate.grpcbootstrap import build_grpc_bootstrap, grpc_bootstrap_json

    problem = check_bootstrap_args(args)
    if problem is not None or args.all:
        return problem if problem is not None else _run_all(args)
    result = load_configuration(args.config_dir, args.config_store)
    if result is None:
        return 1
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
            credentials = bootstrap_credentials(args, workload, directory)
        except CAError as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return 1
    if args.grpc:
        text = grpc_bootstrap_json(
            build_grpc_bootstrap(workload, tuple(args.xds_address), credentials)
        )
    else:
        text = bootstrap_yaml(
            build_bootstrap(
                workload,
                xds_address=tuple(args.xds_address),
                admin_address=args.admin_address,
                outbound_address=args.outbound_address,
                app_address=args.app_address,
                role=Role(args.role) if args.role else None,
                credentials=credentials,
                delta=args.delta,
                capture=CAPTURE_MODES[args.capture] if args.capture else None,
                stats=stats_inclusion(args),
            )
        )
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _all_flags(boot: argparse.ArgumentParser) -> None:
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
    if args.grpc and (args.all or args.delta or args.capture or args.role):
        return (
            "--grpc writes one gRPC application's bootstrap: no --all, --delta, --capture, --role"
        )
    stats = stats_inclusion(args)
    if stats and (args.all or args.grpc):
        return "--stats-inclusion-* are for one Envoy's bootstrap: not with --all or --grpc"
    problems = [regex_problem(r) for r in stats.regexps]
    if any(problems):
        return f"--stats-inclusion-regexps: {next(p for p in problems if p)}"
    if args.all and args.workload:
        return "give a WORKLOAD or --all, not both"
    if not args.all and not args.workload:
        return "give a WORKLOAD (a WorkloadEntry name) or --all"
    if args.all and args.output is None:
        return "--all writes one file per workload: give the directory with -o DIR"
    return None


def stats_inclusion(args: argparse.Namespace) -> StatsInclusion:
    def patterns(text: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in text.split(",") if p.strip())

    return StatsInclusion(
        prefixes=patterns(args.stats_inclusion_prefixes),
        suffixes=patterns(args.stats_inclusion_suffixes),
        regexps=patterns(args.stats_inclusion_regexps),
    )


def bootstrap_credentials(
    args: argparse.Namespace, workload: Workload, out_dir: Path
) -> BootstrapCredentials:
    """The credentials a --secure bootstrap names (minted unless
    --no-credentials). Raises CAError when the CA cannot be loaded."""
    from sailplane.demo.bootstraps import mint_credentials, named_credentials

    if args.no_credentials:
        return named_credentials(workload, args.cert_dir or out_dir, args.trust_domain)
    return mint_credentials(ca.authority_from_args(args), workload, out_dir, args.cert_dir)


def _run_all(args: argparse.Namespace) -> int:
    from sailplane.demo.bootstraps import write_mesh_bootstraps

    result = load_configuration(args.config_dir, args.config_store)
    if result is None:
        return 1
    if result.mesh is None:
        for diagnostic in result.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
        return 1
    authority = None
    if args.secure and not args.no_credentials:
        try:
            authority = ca.authority_from_args(args)
        except CAError as exc:
            print(f"sailplane: {exc}", file=sys.stderr)
            return 1
    written = write_mesh_bootstraps(
        result.mesh,
        args.output,
        tuple(args.xds_address),
        authority=authority,
        cert_dir=args.cert_dir,
        trust_domain=args.trust_domain,
        secure=args.secure,
        capture=CAPTURE_MODES[args.capture] if args.capture else None,
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
