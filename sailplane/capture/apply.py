"""Putting the capture rules in force in the current network namespace, and
taking them out again, with ``iptables-save``/``iptables-restore`` (and the
``ip6`` pair for IPv6) from PATH.

Each change is one ``iptables-restore --noflush`` transaction built from what
``iptables-save`` shows: the tables either get the whole change or none of
it, and other rules of the nat table are left as they were.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from sailplane.capture.rules import (
    CaptureOptions,
    Family,
    global_ipv6_addresses,
    install_script,
    installed,
    nat_rules,
    remove_script,
)
from sailplane.errors import CaptureError

TIMEOUT_SECONDS = 30.0
# This network namespace's IPv6 addresses (/proc/net follows the reader's netns).
IF_INET6 = "/proc/net/if_inet6"


@dataclass(frozen=True, slots=True)
class Tools:
    """The save/restore pair of one address family."""

    family: Family
    save: str
    restore: str


def find_tools(family: Family) -> Tools:
    prefix = "iptables" if family == 4 else "ip6tables"
    paths = [shutil.which(f"{prefix}-save"), shutil.which(f"{prefix}-restore")]
    if paths[0] is None or paths[1] is None:
        missing = f"{prefix}-save" if paths[0] is None else f"{prefix}-restore"
        raise CaptureError(f"{missing} not found on PATH (install the iptables package)")
    return Tools(family, paths[0], paths[1])


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
        detail = detail.splitlines()[0]
        if "ermission denied" in detail or "must be root" in detail:
            raise CaptureError(
                f"changing iptables needs root or CAP_NET_ADMIN in this network namespace "
                f"({argv[0].rsplit('/', 1)[-1]}: {detail})"
            )
        raise CaptureError(f"{argv[0].rsplit('/', 1)[-1]} failed: {detail}")
    return done.stdout


def saved_nat(tools: Tools) -> str:
    return _run([tools.save, "-t", "nat"])


def uncaptured_ipv6(options: CaptureOptions, if_inet6: str | None = None) -> list[str]:
    """The global IPv6 addresses of this network namespace whose TCP the
    rules of ``options`` would let by (all of them unless ``dual_stack``)."""
    if 6 in options.families:
        return []
    if_inet6 = if_inet6 or IF_INET6
    try:
        with open(if_inet6, encoding="ascii") as table:
            return global_ipv6_addresses(table.read())
    except FileNotFoundError:
        return []  # IPv6 is off in this kernel
    except OSError as exc:
        raise CaptureError(f"cannot read {if_inet6}: {exc}") from exc


def install(options: CaptureOptions) -> None:
    """Install (or replace) the rules of every family of ``options``.

    Refused when the namespace has a global IPv6 address and ``options`` are
    IPv4 only: its TCP would go around the proxy (past STRICT and
    REGISTRY_ONLY) with nothing said."""
    found = [find_tools(family) for family in options.families]
    addresses = uncaptured_ipv6(options)
    if addresses:
        raise CaptureError(
            f"this network namespace has global IPv6 addresses ({', '.join(addresses)}) "
            "whose TCP IPv4-only rules would not capture: pass --dual-stack, "
            "or turn IPv6 off in it (net.ipv6.conf.all.disable_ipv6=1)"
        )
    for tools in found:
        state = installed(saved_nat(tools))
        script = install_script(nat_rules(options, tools.family), state.jumps)
        _run([tools.restore, "--noflush"], script)


def remove() -> bool:
    """Remove our jumps and chains, from ip6tables too wherever it is
    installed (rules put there by ``--dual-stack`` go whatever the flags of
    the removal); False when there was nothing to remove."""
    removed = False
    for family in (4, 6):
        try:
            tools = find_tools(family)
        except CaptureError:
            if family == 4:
                raise
            continue  # no ip6tables: no IPv6 rules either
        state = installed(saved_nat(tools))
        script = remove_script(state.jumps, state.chains)
        if script is not None:
            _run([tools.restore, "--noflush"], script)
            removed = True
    return removed
