"""A TCP listener that tells each client where it landed, and the client that
asks: proof of where a connection went and of the destination it was meant
for (``SO_ORIGINAL_DST``, which iptables' REDIRECT keeps).

Run as a script inside a pod (stdlib only, so any uid can run it):

    tcpprobe.py serve NAME PORT [PORT...]   print "ready", then answer each
                                            connection with one line and close
    tcpprobe.py connect HOST PORT [SOURCE]  print the line the server sent

The line: ``NAME local=IP:PORT orig=IP:PORT peer=IP:PORT`` (``orig=-`` when
the kernel has no NAT record of the connection).
"""

from __future__ import annotations

import selectors
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

    from tests.support.netns import Pod, PodNetwork

SCRIPT = str(Path(__file__).resolve())
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


@dataclass(frozen=True, slots=True)
class Landed:
    """Where a probe connection arrived."""

    listener: str
    local: str
    orig: str
    peer: str


def parse(line: str) -> Landed:
    name, *fields = line.split()
    values = dict(field.split("=", 1) for field in fields)
    return Landed(name, values["local"], values["orig"], values["peer"])


def _original_destination(conn: socket.socket) -> str:
    try:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return "-"
    port, address = struct.unpack_from("!2xH4s", raw)
    return f"{socket.inet_ntoa(address)}:{port}"


def _address(pair: tuple[str, int]) -> str:
    return f"{pair[0]}:{pair[1]}"


def serve(name: str, ports: list[int]) -> None:
    selector = selectors.DefaultSelector()
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(64)
        selector.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            listener = key.fileobj  # type: ignore[assignment]
            conn, peer = listener.accept()
            with conn:
                line = f"{name} local={_address(conn.getsockname())} "
                line += f"orig={_original_destination(conn)} peer={_address(peer)}\n"
                conn.sendall(line.encode())


def connect(host: str, port: int, source: str | None) -> int:
    try:
        with socket.create_connection(
            (host, port), timeout=3, source_address=(source, 0) if source else None
        ) as conn:
            data = conn.makefile().readline()
    except OSError as exc:
        print(f"error {exc}")
        return 1
    print(data, end="")
    return 0 if data else 1


# -- used by the tests, from outside the pods ---------------------------------


def start_server(
    network: PodNetwork, pod: Pod, name: str, ports: list[int], uid: int | None = None
) -> subprocess.Popen[str]:
    """A listener in ``pod``, ready when this returns; stopped with the network."""
    process = network.spawn(
        pod, [sys.executable, "-I", SCRIPT, "serve", name, *map(str, ports)], uid=uid
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first == "ready\n", f"probe server {name} did not start: {first}"
    return process


def probe(
    network: PodNetwork,
    pod: Pod,
    host: str,
    port: int,
    uid: int | None = None,
    gid: int | None = None,
    source: str | None = None,
) -> Landed:
    """Connect from ``pod`` (as ``uid``/``gid``) and report where it landed."""
    argv = [sys.executable, "-I", SCRIPT, "connect", host, str(port)]
    done = network.run(pod, [*argv, *([source] if source else [])], uid=uid, gid=gid)
    assert done.returncode == 0, f"connect {host}:{port} from {pod.name}: {done.stdout}"
    return parse(done.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    else:
        sys.exit(connect(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
