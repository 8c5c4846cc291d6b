"""``sailplane capture`` in real network namespaces with real iptables: pod A
is captured, B and C are its peers on one private segment. Listeners that
report where each connection landed and the destination it was meant for
(SO_ORIGINAL_DST) stand in for the proxy (15001 outbound, 15006 inbound),
A's app and the peers.

Root only; every namespace, link, rule and process goes with the network.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest

from tests.support.netns import PodNetwork, skip_reason
from tests.support.tcpprobe import Landed, probe, start_server

SKIP = skip_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

APP_UID = 1000  # an app: not the proxy
PROXY_UID = 1337
PORT = 9000  # A's app port and B's service port
EXCLUDED_OUT_PORT = 9001
CONTROL_PLANE_PORT = 9002
EXCLUDED_IN_PORT = 9001
# Istio's injector excludes its agent's ports; nothing of sailplane binds
# them, so an app listening there is captured like any other.
ISTIO_AGENT_PORTS = (15020, 15021, 15090)


def capture(net: PodNetwork, *argv: str, uid: int | None = None) -> tuple[int, str, str]:
    """The real CLI, run inside pod A."""
    done = net.run(net["a"], [sys.executable, "-m", "sailplane", "capture", *argv], uid=uid)
    return done.returncode, done.stdout, done.stderr


def nat_table(net: PodNetwork) -> str:
    """A's nat table as iptables-save shows it, without its comment lines."""
    done = net.run(net["a"], ["iptables-save", "-t", "nat"])
    assert done.returncode == 0, done.stderr
    return "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))


@contextlib.contextmanager
def pods() -> Iterator[PodNetwork]:
    with PodNetwork(["a", "b", "c"]) as network:
        a = network["a"]
        start_server(network, a, "outbound", [15001])
        start_server(network, a, "inbound", [15006])
        start_server(network, a, "app-a", [PORT, EXCLUDED_IN_PORT, *ISTIO_AGENT_PORTS])
        start_server(network, network["b"], "b", [PORT, EXCLUDED_OUT_PORT, CONTROL_PLANE_PORT])
        start_server(network, network["c"], "c", [PORT])
        yield network


@pytest.fixture
def net() -> Iterator[PodNetwork]:
    """Pods of one test, which may change their rules."""
    with pods() as network:
        yield network


@pytest.fixture(scope="module")
def captured() -> Iterator[PodNetwork]:
    """Pods with A captured, shared by the tests that only connect."""
    with pods() as network:
        c = network["c"].ip
        code, out, err = capture(
            network,
            f"--exclude-outbound-ports={EXCLUDED_OUT_PORT}",
            f"--exclude-outbound-cidrs={c}/32",
            f"--exclude-inbound-ports={EXCLUDED_IN_PORT}",
        )
        assert code == 0, err
        assert "outbound TCP -> :15001" in out
        yield network


def from_a(net: PodNetwork, host: str, port: int, uid: int, **kw: str | int) -> Landed:
    return probe(net, net["a"], host, port, uid=uid, **kw)  # type: ignore[arg-type]


def test_an_apps_outbound_connection_lands_on_15001_with_its_destination(
    captured: PodNetwork,
) -> None:
    b = captured["b"].ip
    landed = from_a(captured, b, PORT, APP_UID)
    assert (landed.listener, landed.orig) == ("outbound", f"{b}:{PORT}")


def test_the_proxys_own_connections_go_straight_out(captured: PodNetwork) -> None:
    """No loop: by uid, and by gid alone."""
    b = captured["b"].ip
    assert from_a(captured, b, PORT, PROXY_UID).listener == "b"
    assert from_a(captured, b, PORT, APP_UID, gid=PROXY_UID).listener == "b"


def test_excluded_ports_and_ranges_go_straight_out(captured: PodNetwork) -> None:
    b, c = captured["b"].ip, captured["c"].ip
    assert from_a(captured, b, EXCLUDED_OUT_PORT, APP_UID).listener == "b"
    assert from_a(captured, c, PORT, APP_UID).listener == "c"
    # The control plane is no exception for an app (as Istio): only the
    # proxy's uid reaches it directly.
    landed = from_a(captured, b, CONTROL_PLANE_PORT, APP_UID)
    assert (landed.listener, landed.orig) == ("outbound", f"{b}:{CONTROL_PLANE_PORT}")
    assert from_a(captured, b, CONTROL_PLANE_PORT, PROXY_UID).listener == "b"


def test_inbound_connections_land_on_15006_but_excluded_ports(captured: PodNetwork) -> None:
    a = captured["a"].ip
    landed = probe(captured, captured["b"], a, PORT)
    assert (landed.listener, landed.orig) == ("inbound", f"{a}:{PORT}")
    assert probe(captured, captured["b"], a, EXCLUDED_IN_PORT).listener == "app-a"
    for port in ISTIO_AGENT_PORTS:
        landed = probe(captured, captured["b"], a, port)
        assert (landed.listener, landed.orig) == ("inbound", f"{a}:{port}")


def test_loopback_as_istio(captured: PodNetwork) -> None:
    """The app calling its own pod address or localhost reaches itself; the
    proxy calling its own pod address goes to its inbound side; the proxy's
    inbound side reaching its app from 127.0.0.6 is left alone."""
    a = captured["a"].ip
    assert from_a(captured, a, PORT, APP_UID).listener == "app-a"
    assert from_a(captured, "127.0.0.1", PORT, APP_UID).listener == "app-a"
    landed = from_a(captured, a, PORT, PROXY_UID)
    assert (landed.listener, landed.orig) == ("inbound", f"{a}:{PORT}")
    landed = from_a(captured, a, PORT, PROXY_UID, source="127.0.0.6")
    assert (landed.listener, landed.peer.split(":")[0]) == ("app-a", "127.0.0.6")


def test_twice_is_one_copy_and_remove_takes_out_exactly_what_was_added(
    net: PodNetwork,
) -> None:
    a = net["a"]
    # Someone else's rules, which must survive both.
    for rule in (["-N", "KEEP_ME"], ["-A", "OUTPUT", "-d", "192.0.2.1/32", "-j", "KEEP_ME"]):
        assert net.run(a, ["iptables", "-t", "nat", *rule]).returncode == 0
    before = nat_table(net)

    assert capture(net)[0] == 0
    once = nat_table(net)
    assert capture(net)[0] == 0
    assert nat_table(net) == once
    assert once.count("-A OUTPUT -j ISTIO_OUTPUT\n") == 1
    assert once.count("-A PREROUTING -p tcp -j ISTIO_INBOUND\n") == 1
    b = net["b"].ip
    assert from_a(net, b, PORT, APP_UID).listener == "outbound"

    code, _, err = capture(net, "--remove")
    assert (code, err) == (0, "")
    assert "ISTIO_" not in nat_table(net)
    assert nat_table(net) == before
    assert from_a(net, b, PORT, APP_UID).listener == "b"
    assert capture(net, "--remove")[:2] == (0, "sailplane capture: no rules\n")


def test_without_cap_net_admin_it_says_so_in_one_line(net: PodNetwork) -> None:
    code, _, err = capture(net, uid=APP_UID)
    assert code == 1
    assert err.count("\n") == 1 and "CAP_NET_ADMIN" in err, err
    assert "ISTIO_" not in nat_table(net)


def test_dual_stack_installs_the_ip6tables_rules_and_remove_takes_them_out(net: PodNetwork) -> None:
    def nat6() -> str:
        done = net.run(net["a"], ["ip6tables-save", "-t", "nat"])
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert capture(net, "--dual-stack")[0] == 0
    saved = nat6()
    assert "-A OUTPUT -j ISTIO_OUTPUT" in saved
    assert "-s ::6/128" in saved  # the proxy inbound side's own source
    assert "ISTIO_OUTPUT" in nat_table(net)
    # --remove takes the IPv6 rules out too, without being told --dual-stack.
    assert capture(net, "--remove")[0] == 0
    assert "ISTIO_" not in nat6() + nat_table(net)


def test_a_global_ipv6_address_is_refused_without_dual_stack(net: PodNetwork) -> None:
    """Its TCP would go around the proxy; link-local ones (every pod here
    has one on eth0) are no reason to refuse."""
    assert capture(net)[0] == 0
    assert capture(net, "--remove")[0] == 0
    add = ["ip", "-6", "addr", "add", "fd00:250::11/64", "dev", "eth0", "nodad"]
    assert net.run(net["a"], add).returncode == 0

    code, out, err = capture(net)
    assert (code, out) == (1, "")
    assert "fd00:250::11 (eth0)" in err and "--dual-stack" in err, err
    assert "ISTIO_" not in nat_table(net)

    assert capture(net, "--dual-stack")[0] == 0
    assert "ISTIO_OUTPUT" in nat_table(net)
