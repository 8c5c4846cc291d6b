"""CA flags shared by ``serve`` and ``bootstrap``, and ``sailplane ca``."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from sailplane.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_CHAIN_FILE,
    KEY_FACTORIES,
    CAError,
    CertificateAuthority,
    load_authority,
    load_or_create_authority,
    write_identity,
    write_intermediate,
)
from sailplane.config.reader import parse_duration


def default_ca_dir() -> Path:
    """``$XDG_STATE_HOME/sailplane/ca`` (``~/.local/state/sailplane/ca``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sailplane" / "ca"


def _duration(value: str) -> timedelta:
    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 24h, 90m, 6s")
    return timedelta(seconds=seconds)


def add_ca_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("certificate authority")
    group.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help=f"CA state directory, created on first use (default {default_ca_dir()})",
    )
    group.add_argument(
        "--ca-cert", type=Path, help="your own root or intermediate CA certificate (PEM)"
    )
    group.add_argument("--ca-key", type=Path, help="its private key (PEM)")
    group.add_argument("--ca-chain", type=Path, help="intermediates up to the root, if any")
    group.add_argument(
        "--trust-domain",
        default="cluster.local",
        help="the trust domain of SPIFFE identities, spiffe://DOMAIN/ns/NS/sa/SA "
        "(default cluster.local)",
    )
    group.add_argument(
        "--key-type",
        choices=sorted(KEY_FACTORIES),
        default="ecdsa-p256",
        help="key algorithm of the certificates it mints (default ecdsa-p256, the fastest to mint)",
    )


def authority_from_args(args: argparse.Namespace, create: bool = True) -> CertificateAuthority:
    """The CA the flags name; with ``create``, a new one in --ca-dir if none
    is there yet (first use). Raises CAError."""
    factory = KEY_FACTORIES[args.key_type]
    if args.ca_cert or args.ca_key:
        if not (args.ca_cert and args.ca_key):
            raise CAError("--ca-cert and --ca-key go together")
        return load_authority(
            args.ca_cert,
            args.ca_key,
            args.ca_chain,
            trust_domain=args.trust_domain,
            key_factory=factory,
        )
    state_dir = args.ca_dir or default_ca_dir()
    if not create and not (state_dir / CA_CERT_FILE).exists():
        raise CAError(
            f"no CA here (no {CA_CERT_FILE}); `sailplane ca init --ca-dir {state_dir}` creates one",
            source=state_dir,
        )
    return load_or_create_authority(state_dir, trust_domain=args.trust_domain, key_factory=factory)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    ca = sub.add_parser("ca", parents=[common], help="the built-in certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="CA_COMMAND")
    init = ca_sub.add_parser(
        "init", parents=[common], help="create the CA (a self-signed root) if missing"
    )
    show = ca_sub.add_parser(
        "show",
        parents=[common],
        help="root fingerprint, subject and expiry (exit 1 if there is no CA)",
    )
    issue = ca_sub.add_parser(
        "issue",
        parents=[common],
        help="a certificate and key for a client without Envoy (creates the CA on first use)",
    )
    issue.add_argument("workload", help="a name for the files (and the default service account)")
    issue.add_argument(
        "--namespace", default="default", help="identity's namespace (default: default)"
    )
    issue.add_argument("--service-account", help="identity's service account (default: workload)")
    issue.add_argument(
        "--ttl",
        type=_duration,
        default=timedelta(hours=24),
        metavar="DURATION",
        help="certificate lifetime, e.g. 24h, 90m (default 24h)",
    )
    issue.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="writes cert-chain.pem, key.pem (0600) and root-cert.pem",
    )
    intermediate = ca_sub.add_parser(
        "intermediate",
        parents=[common],
        help="a CA signed by this one for another control-plane replica (serve --ca-dir DIR)",
    )
    intermediate.add_argument("name", help="the replica's name, the new CA's common name")
    intermediate.add_argument(
        "--ttl",
        type=_duration,
        default=timedelta(days=365),
        metavar="DURATION",
        help="its lifetime, e.g. 8760h (default 365 days, cut to the signing CA's)",
    )
    intermediate.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="an empty directory: ca-cert.pem, ca-key.pem (0600), cert-chain.pem, root-cert.pem",
    )
    intermediate.add_argument(
        "--keep-existing",
        action="store_true",
        help="if OUT_DIR already holds a CA of this root, keep it and exit 0 (a one-shot "
        "that runs at every start, as in docker-compose.replicas.yml)",
    )
    for parser in (init, show, issue, intermediate):
        add_ca_flags(parser)


def run(args: argparse.Namespace) -> int:
    try:
        # Showing a CA must not make one: a wrong --ca-dir would look fine.
        authority = authority_from_args(args, create=args.ca_command != "show")
    except CAError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 1
    info = authority.info()
    if args.ca_command == "issue":
        identity = authority.issue_workload(
            args.namespace, args.service_account or args.workload, ttl=args.ttl
        )
        out: Path = args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        write_identity(identity, out / "cert-chain.pem", out / "key.pem", out / "root-cert.pem")
        print(
            f"{identity.spiffe_id} valid until {identity.not_after.isoformat()}: "
            f"{out / 'cert-chain.pem'}, {out / 'key.pem'}, {out / 'root-cert.pem'}"
        )
        return 0
    if args.ca_command == "intermediate":
        return _write_intermediate(authority, args)
    where = args.ca_cert or args.ca_dir or default_ca_dir()
    print(f"CA:          {where}")
    print(f"trust domain {info.trust_domain}")
    print(f"root         {info.root_subject}")
    print(f"fingerprint  SHA256 {info.root_fingerprint_sha256}")
    print(f"valid until  {info.root_not_after.isoformat()}")
    if info.intermediate:
        print(f"signing      {info.signing_subject} (until {info.signing_not_after.isoformat()})")
    return 0


def _write_intermediate(authority: CertificateAuthority, args: argparse.Namespace) -> int:
    out: Path = args.out_dir
    if args.keep_existing and (out / CA_CERT_FILE).exists():
        return _keep_intermediate(authority, out)
    try:
        intermediate = authority.issue_intermediate(args.name, ttl=args.ttl)
        write_intermediate(out, intermediate)
    except CAError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 1
    certificate = intermediate.certificate
    print(
        f"{certificate.subject.rfc4514_string()} signed by "
        f"{authority.signing_certificate.subject.rfc4514_string()}, valid until "
        f"{certificate.not_valid_after_utc.isoformat()}: serve --ca-dir {out}"
    )
    return 0


def _keep_intermediate(authority: CertificateAuthority, out: Path) -> int:
    """The CA already in ``out``, if it is usable and chains to ``authority``'s root."""
    try:
        existing = load_authority(out / CA_CERT_FILE, out / CA_KEY_FILE, out / CERT_CHAIN_FILE)
    except CAError as exc:
        print(f"sailplane: {exc}", file=sys.stderr)
        return 1
    if existing.root_certificate != authority.root_certificate:
        print(f"sailplane: {out} holds a CA of another root; choose an empty directory",
              file=sys.stderr)  # fmt: skip
        return 1
    subject = existing.signing_certificate.subject.rfc4514_string()
    print(f"{subject} kept (already in {out}): serve --ca-dir {out}")
    return 0


def cert_ttl(value: str) -> timedelta:
    return _duration(value)
