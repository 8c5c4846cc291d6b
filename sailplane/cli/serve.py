"""``sailplane serve``: the control plane, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import timedelta
from pathlib import Path

from sailplane.ca import CAError
from sailplane.cli import ca
from sailplane.cli.common import (
    config_store_flag,
    host_port,
    max_file_size_flag,
    open_config_store,
    optional_address,
    resolve_config_dir,
)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser(
        "serve", parents=[common], help="serve xDS for a watched config directory"
    )
    serve.add_argument(
        "--config-dir",
        type=Path,
        help="directory of mesh YAML (default: the embedded weather example); with "
        "--config-store, this replica also syncs it into the store on every change "
        "(`apply --prune`) and serves from the store",
    )
    serve.add_argument(
        "--xds-address",
        type=optional_address,
        default=("127.0.0.1", 15010),
        help="plaintext ADS address, HOST:PORT: configuration only, never secrets ('' turns "
        "it off; default 127.0.0.1:15010)",
    )
    serve.add_argument(
        "--monitor-address",
        type=host_port,
        default=("127.0.0.1", 15014),
        help="debug and metrics HTTP address, unauthenticated (default 127.0.0.1:15014)",
    )
    serve.add_argument(
        "--debounce",
        "--debounce-quiet",
        dest="debounce",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="quiet time before a config change is applied (default 0.1)",
    )
    serve.add_argument(
        "--secure-xds-address",
        type=optional_address,
        default=("0.0.0.0", 15012),
        help="mTLS ADS address, HOST:PORT: configuration and each proxy's own secrets "
        "('' turns it off; default 0.0.0.0:15012)",
    )
    serve.add_argument(
        "--cert-ttl",
        type=ca.cert_ttl,
        default=timedelta(hours=24),
        help="workload certificate lifetime; rotated at half of it (default 24h)",
    )
    ca.add_ca_flags(serve)
    serve.add_argument(
        "--access-log-file",
        default="-",
        metavar="PATH",
        help="where the `sailplane` access log provider writes JSON lines ('-': stdout)",
    )
    serve.add_argument(
        "--debounce-max",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="longest a burst of changes can delay a reload (default 1.0)",
    )
    max_file_size_flag(serve)
    config_store_flag(serve)
    serve.add_argument(
        "--replica-name",
        metavar="NAME",
        help="this replica's name in the config store's registry, shown by `sailplane "
        "status --config-store` (default HOSTNAME-PID; with --config-store only)",
    )


def run(args: argparse.Namespace) -> int:
    from sailplane.errors import PortInUseError
    from sailplane.server.plane import ServeOptions, serve_forever
    from sailplane.store.replicas import valid_replica_name

    if args.config_store and open_config_store(args.config_store, args.max_file_size) is None:
        return 2
    if args.replica_name is not None and not valid_replica_name(args.replica_name):
        print(f"sailplane: bad --replica-name {args.replica_name!r} (no '/')", file=sys.stderr)
        return 2
    config_dir = resolve_config_dir(args.config_dir)
    sync = bool(args.config_store and args.config_dir)
    if (sync or not args.config_store) and not config_dir.exists():
        print(f"sailplane: config dir {config_dir} does not exist", file=sys.stderr)
        return 2
    options = ServeOptions(
        config_dir=config_dir,
        xds_address=args.xds_address,
        monitor_address=args.monitor_address,
        debounce_quiet=args.debounce,
        debounce_max=args.debounce_max,
        secure_xds_address=args.secure_xds_address,
        cert_ttl=args.cert_ttl,
        access_log_file=args.access_log_file,
        max_file_size=args.max_file_size,
        config_store=args.config_store,
        replica_name=args.replica_name,
        sync=sync,
    )
    try:
        options.authority = ca.authority_from_args(args)
    except CAError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_forever(options))
    except PortInUseError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 1
    return 0
