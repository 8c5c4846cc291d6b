"""The nat-table rules of transparent capture, as ``istio-iptables`` writes
them (tools/istio-iptables/pkg/capture/run.go, REDIRECT mode), and the
``iptables-restore`` scripts that install and remove them. Pure: text in,
text out; :mod:`sailplane.capture.apply` runs the tools.

Outbound TCP is redirected to the proxy's 15001, inbound TCP to its 15006.
The proxy's own traffic (its uid or gid) is never redirected, except a
connection of the proxy to its own pod's address over ``lo``, which goes to
the inbound side (Istio: "app -> Envoy (client) -> Envoy (server) -> app");
connections from 127.0.0.6 are the proxy's inbound side reaching its app and
are left alone. DNS is not captured. Istio's HBONE tunnel port (15008) has
no counterpart here, so its ``--dport 15008`` exceptions are left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Family = Literal[4, 6]

INBOUND = "ISTIO_INBOUND"
IN_REDIRECT = "ISTIO_IN_REDIRECT"
OUTPUT = "ISTIO_OUTPUT"
REDIRECT = "ISTIO_REDIRECT"
# The order Istio declares them in; every one is created on every install.
CHAINS = (INBOUND, REDIRECT, IN_REDIRECT, OUTPUT)
# Built-in chains that jump into ours, and the jump each one gets.
JUMP_CHAINS = ("PREROUTING", "OUTPUT")

# The proxy's capture ports (Istio's defaults). Fixed: the translation's
# virtualOutbound and virtualInbound listen on exactly these.
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006

# No inbound port is excluded unless asked. Istio's injector excludes its
# agent's 15020/15021/15090, which nothing of sailplane binds: an app
# listening there would bypass STRICT. The proxy's admin (15000) listens on
# 127.0.0.1, which inbound capture (PREROUTING) never sees; an admin bound
# beyond loopback had better go through virtualInbound than around it.

# The proxy's inbound side binds this source to reach its app (Istio's
# InboundPassthroughBindIpv4/6).
INBOUND_PASSTHROUGH_SOURCE: dict[Family, str] = {4: "127.0.0.6/32", 6: "::6/128"}
LOOPBACK: dict[Family, str] = {4: "127.0.0.1/32", 6: "::1/128"}


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What ``sailplane capture`` installs; the defaults are Istio's.

    ``inbound_ports`` is ``"*"`` (every port but the excluded ones) or the
    ports to capture (empty: no inbound capture); ``include_outbound_cidrs``
    is ``"*"`` or the ranges to capture (empty: none, unless a port is
    included). Exclusions apply before inclusions, as in Istio.
    """

    proxy_uid: int = 1337
    proxy_gid: int = 1337
    inbound_ports: Literal["*"] | tuple[int, ...] = "*"
    exclude_inbound_ports: tuple[int, ...] = ()
    include_outbound_cidrs: Literal["*"] | tuple[Network, ...] = "*"
    exclude_outbound_cidrs: tuple[Network, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    include_outbound_ports: tuple[int, ...] = ()
    dual_stack: bool = False  # IPv6 too, with ip6tables
    families: tuple[Family, ...] = field(init=False)

    def __post_init__(self) -> None:
        ports = [*self.exclude_inbound_ports]
        ports += [*self.exclude_outbound_ports, *self.include_outbound_ports]
        if self.inbound_ports != "*":
            ports += self.inbound_ports
        bad = [p for p in ports if not 0 < p < 65536]
        if bad:
            raise ValueError(f"port out of range 1-65535: {bad[0]}")
        if min(self.proxy_uid, self.proxy_gid) < 0:
            raise ValueError("proxy uid and gid must not be negative")
        object.__setattr__(self, "families", (4, 6) if self.dual_stack else (4,))

    def excluded_inbound_ports(self) -> tuple[int, ...]:
        """The user's, in their order, once each."""
        return tuple(dict.fromkeys(self.exclude_inbound_ports))


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``iptables`` rule of the nat table: its chain and its match/target."""

    chain: str
    spec: tuple[str, ...]

    def line(self, op: Literal["-A", "-D"] = "-A") -> str:
        return " ".join((op, self.chain, *self.spec))


def _of_family(items: Iterable[Network], family: Family) -> list[Network]:
    return [n for n in items if n.version == family]


def _chain_heads(options: CaptureOptions) -> list[Rule]:
    return [
        Rule(REDIRECT, ("-p", "tcp", "-j", "REDIRECT", "--to-ports", str(OUTBOUND_CAPTURE_PORT))),
        Rule(IN_REDIRECT, ("-p", "tcp", "-j", "REDIRECT", "--to-ports", str(INBOUND_CAPTURE_PORT))),
    ]


def inbound_rules(options: CaptureOptions) -> list[Rule]:
    """PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT (15006)."""
    if options.inbound_ports != "*" and not options.inbound_ports:
        return []
    rules = [Rule("PREROUTING", ("-p", "tcp", "-j", INBOUND))]
    if options.inbound_ports == "*":
        for port in options.excluded_inbound_ports():
            rules.append(Rule(INBOUND, ("-p", "tcp", "--dport", str(port), "-j", "RETURN")))
        rules.append(Rule(INBOUND, ("-p", "tcp", "-j", IN_REDIRECT)))
    else:
        for port in dict.fromkeys(options.inbound_ports):
            rules.append(Rule(INBOUND, ("-p", "tcp", "--dport", str(port), "-j", IN_REDIRECT)))
    return rules


def _owner_rules(options: CaptureOptions, family: Family) -> list[Rule]:
    """The proxy's own traffic: to its own pod over lo -> inbound; app -> own
    pod over lo -> untouched; anything else of the proxy -> untouched."""
    include = options.include_outbound_cidrs
    loopback_included = include != "*" and any(
        n.network_address.is_loopback for n in _of_family(include, family)
    )
    rules = []
    for kind, owner in (("--uid-owner", options.proxy_uid), ("--gid-owner", options.proxy_gid)):
        to_own_pod = ("-o", "lo", "!", "-d", LOOPBACK[family], "-p", "tcp")
        rules.append(
            Rule(OUTPUT, (*to_own_pod, "-m", "owner", kind, str(owner), "-j", IN_REDIRECT))
        )
        if not loopback_included:
            rules.append(
                Rule(OUTPUT, ("-o", "lo", "-m", "owner", "!", kind, str(owner), "-j", "RETURN"))
            )
        rules.append(Rule(OUTPUT, ("-m", "owner", kind, str(owner), "-j", "RETURN")))
    return rules


def outbound_rules(options: CaptureOptions, family: Family) -> list[Rule]:
    """OUTPUT -> ISTIO_OUTPUT -> ISTIO_REDIRECT (15001), in Istio's order."""
    rules = [Rule("OUTPUT", ("-j", OUTPUT))]
    for port in dict.fromkeys(options.exclude_outbound_ports):
        rules.append(Rule(OUTPUT, ("-p", "tcp", "--dport", str(port), "-j", "RETURN")))
    source = INBOUND_PASSTHROUGH_SOURCE[family]
    rules.append(Rule(OUTPUT, ("-o", "lo", "-s", source, "-j", "RETURN")))
    rules += _owner_rules(options, family)
    rules.append(Rule(OUTPUT, ("-d", LOOPBACK[family], "-j", "RETURN")))
    for network in dict.fromkeys(_of_family(options.exclude_outbound_cidrs, family)):
        rules.append(Rule(OUTPUT, ("-d", str(network), "-j", "RETURN")))
    for port in dict.fromkeys(options.include_outbound_ports):
        rules.append(Rule(OUTPUT, ("-p", "tcp", "--dport", str(port), "-j", REDIRECT)))
    if options.include_outbound_cidrs == "*":
        rules.append(Rule(OUTPUT, ("-j", REDIRECT)))
    else:
        for network in dict.fromkeys(_of_family(options.include_outbound_cidrs, family)):
            rules.append(Rule(OUTPUT, ("-d", str(network), "-j", REDIRECT)))
    return rules


def nat_rules(options: CaptureOptions, family: Family) -> list[Rule]:
    """Every rule of one address family, jumps from the built-in chains included."""
    return [*_chain_heads(options), *inbound_rules(options), *outbound_rules(options, family)]


def _script(lines: Iterable[str]) -> str:
    return "\n".join(("*nat", *lines, "COMMIT", ""))


def install_script(rules: Iterable[Rule], installed_jumps: Iterable[str] = ()) -> str:
    """One ``iptables-restore --noflush`` transaction: the jumps found
    installed are deleted, our chains are (re)declared, which creates or
    flushes them, and every rule is appended. Running it again leaves one copy."""
    deletions = [f"-D{jump[2:]}" for jump in installed_jumps]
    chains = [f":{chain} - [0:0]" for chain in CHAINS]
    return _script([*deletions, *chains, *(rule.line() for rule in rules)])


def remove_script(installed_jumps: Iterable[str], installed_chains: Iterable[str]) -> str | None:
    """Delete the jumps into our chains, then flush and delete the chains;
    ``None`` when nothing of ours is installed."""
    deletions = [f"-D{jump[2:]}" for jump in installed_jumps]
    chains = list(installed_chains)
    if not deletions and not chains:
        return None
    flushes = [f":{chain} - [0:0]" for chain in chains]
    return _script([*deletions, *flushes, *(f"-X {chain}" for chain in chains)])


def global_ipv6_addresses(if_inet6: str) -> list[str]:
    """The addresses of ``/proc/net/if_inet6`` (one per line: address in 32
    hex digits, ifindex, prefix length, scope, flags, interface) whose scope
    is global, as ``ADDRESS (INTERFACE)``. The kernel's scope, not Python's
    ``is_global``: a unique-local address (fd00::/8, Docker's usual IPv6)
    routes beyond the pod as well as a public one does."""
    found = []
    for line in if_inet6.splitlines():
        words = line.split()
        if len(words) == 6 and words[3] == "00" and len(words[0]) == 32:
            address = ipaddress.IPv6Address(int(words[0], 16))
            found.append(f"{address} ({words[5]})")
    return found


@dataclass(frozen=True, slots=True)
class Installed:
    """What of ours an ``iptables-save -t nat`` shows."""

    jumps: tuple[str, ...]  # "-A PREROUTING -p tcp -j ISTIO_INBOUND" lines
    chains: tuple[str, ...]


def installed(saved: str) -> Installed:
    """Parse ``iptables-save -t nat``: our chains, and the rules of the
    built-in chains that jump to one of them (exactly as saved, so ``-D``
    with the same text deletes them)."""
    in_nat = False
    jumps: list[str] = []
    chains: list[str] = []
    for raw in saved.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat:
            continue
        elif line.startswith(":") and line[1:].split(" ", 1)[0] in CHAINS:
            chains.append(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
            if words[1] in JUMP_CHAINS and target in CHAINS:
                jumps.append(line)
    return Installed(tuple(jumps), tuple(chains))
