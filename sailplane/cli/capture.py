"""``sailplane capture``: the init step of transparent mode, Istio's
``istio-iptables`` for sailplane. Flags follow istio-iptables' and the pod
annotations ``traffic.sidecar.istio.io/*``; lists are comma-separated."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sailplane.capture.rules import Network

# Exit status: 0 done (also: nothing to remove), 1 could not, 2 usage.
EXIT_FAILED = 1


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 1-65535")
    return port


def _ports(value: str) -> tuple[int, ...]:
    return tuple(_port(p.strip()) for p in value.split(",") if p.strip())


def _inbound_ports(value: str) -> Literal["*"] | tuple[int, ...]:
    return "*" if value.strip() == "*" else _ports(value)


def _cidrs(value: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(c.strip()) for c in value.split(",") if c.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _include_cidrs(value: str) -> Literal["*"] | tuple[Network, ...]:
    return "*" if value.strip() == "*" else _cidrs(value)


def _id(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a numeric id")
    return int(value)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    capture = sub.add_parser(
        "capture",
        parents=[common],
        # No abbreviations: the old --inbound-port would be --inbound-ports.
        allow_abbrev=False,
        help="redirect this network namespace's TCP into the sidecar with iptables "
        "(the init step of transparent mode; needs CAP_NET_ADMIN)",
        description="Install nat-table rules in the current network namespace, as Istio's "
        "istio-iptables does: outbound TCP to the proxy's 15001, inbound TCP to its 15006 "
        "(the ports of its virtualOutbound and virtualInbound), except the proxy's own "
        "traffic (its uid or gid), loopback and what is excluded. Chains ISTIO_INBOUND, "
        "ISTIO_IN_REDIRECT, ISTIO_OUTPUT and ISTIO_REDIRECT. Running it again replaces the "
        "rules (one copy); --remove deletes exactly them (IPv6 too wherever ip6tables has "
        "them). DNS is not captured. Without --dual-stack it refuses a namespace with a "
        "global IPv6 address, whose TCP would go around the proxy. Exit status: 0 done, "
        "1 could not (no iptables, no CAP_NET_ADMIN, a rule rejected, uncaptured IPv6), "
        "2 usage.",
    )
    capture.add_argument(
        "--proxy-uid", type=_id, default=1337, help="uid the proxy runs as (default 1337)"
    )
    capture.add_argument(
        "--proxy-gid", type=_id, help="gid the proxy runs as (default: the --proxy-uid)"
    )
    capture.add_argument(
        "--inbound-ports",
        type=_inbound_ports,
        default="*",
        metavar="'*'|PORTS",
        help="inbound ports to capture: '*' (default) or a list; empty captures none",
    )
    capture.add_argument(
        "--exclude-inbound-ports",
        type=_ports,
        default=(),
        metavar="PORTS",
        help="inbound ports never captured with '*' (none unless listed)",
    )
    capture.add_argument(
        "--include-outbound-cidrs",
        "--outbound-cidrs",
        type=_include_cidrs,
        default="*",
        metavar="'*'|CIDRS",
        help="outbound destinations to capture: '*' (default) or a list of ranges",
    )
    capture.add_argument(
        "--exclude-outbound-cidrs",
        type=_cidrs,
        default=(),
        metavar="CIDRS",
        help="outbound destinations never captured",
    )
    capture.add_argument(
        "--exclude-outbound-ports",
        type=_ports,
        default=(),
        metavar="PORTS",
        help="outbound destination ports never captured",
    )
    capture.add_argument(
        "--include-outbound-ports",
        type=_ports,
        default=(),
        metavar="PORTS",
        help="outbound destination ports captured whatever the destination range",
    )
    capture.add_argument(
        "--dual-stack", action="store_true", help="IPv6 too: also install the rules with ip6tables"
    )
    capture.add_argument(
        "--remove",
        action="store_true",
        help="remove the rules instead (the ip6tables ones too, wherever ip6tables has them)",
    )
    capture.add_argument(
        "--dry-run",
        action="store_true",
        help="print the iptables-restore input instead of applying it",
    )


def run(args: argparse.Namespace) -> int:
    from sailplane.capture import (
        INBOUND_CAPTURE_PORT,
        OUTBOUND_CAPTURE_PORT,
        CaptureOptions,
        install,
        remove,
    )
    from sailplane.capture.rules import install_script, nat_rules, remove_script
    from sailplane.errors import CaptureError

    try:
        options = CaptureOptions(
            proxy_uid=args.proxy_uid,
            proxy_gid=args.proxy_uid if args.proxy_gid is None else args.proxy_gid,
            inbound_ports=args.inbound_ports,
            exclude_inbound_ports=args.exclude_inbound_ports,
            include_outbound_cidrs=args.include_outbound_cidrs,
            exclude_outbound_cidrs=args.exclude_outbound_cidrs,
            exclude_outbound_ports=args.exclude_outbound_ports,
            include_outbound_ports=args.include_outbound_ports,
            dual_stack=args.dual_stack,
        )
        if args.dry_run:
            from sailplane.capture.rules import CHAINS, JUMP_CHAINS

            for family in options.families:
                tool = "iptables-restore" if family == 4 else "ip6tables-restore"
                rules = nat_rules(options, family)
                if args.remove:
                    jumps = [r.line() for r in rules if r.chain in JUMP_CHAINS]
                    text = remove_script(jumps, CHAINS) or ""
                else:
                    text = install_script(rules)
                print(f"# {tool} --noflush", text, sep="\n", end="")
            return 0
        if args.remove:
            done = remove()
            print("sailplane capture: rules removed" if done else "sailplane capture: no rules")
            return 0
        install(options)
    except CaptureError as exc:
        print(f"sailplane capture: {exc}", file=sys.stderr)
        return EXIT_FAILED
    names = " and ".join(f"IPv{f}" for f in options.families)
    print(
        f"sailplane capture: {names} outbound TCP -> :{OUTBOUND_CAPTURE_PORT}, "
        f"inbound TCP -> :{INBOUND_CAPTURE_PORT} (proxy uid {options.proxy_uid}, "
        f"gid {options.proxy_gid})"
    )
    return 0
