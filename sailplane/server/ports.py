"""Claiming the control plane's ports: all of them, or none.

Two control planes must never share a port. gRPC turns on SO_REUSEPORT by
default, which lets a second ``sailplane serve`` bind the same address and
take a share of new connections: a reconnecting Envoy could then be served
another mesh. So the gRPC servers run with SO_REUSEPORT off, and every port
is tried before anything is bound or started: a taken port is one line and
exit status 1, with nothing half started.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from sailplane.errors import PortInUseError


def check_ports_free(addresses: Iterable[tuple[str, tuple[str, int]]]) -> None:
    """Raise :class:`PortInUseError` naming the first ``(what, (host, port))``
    that cannot be bound. Port 0 (any free port) is always free."""
    for what, (host, port) in addresses:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the real listeners do: a port in TIME_WAIT is not taken, a
            # listening one is (Linux refuses it even with SO_REUSEADDR).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise PortInUseError(port_message(what, host, port, exc.strerror)) from None


def port_message(what: str, host: str, port: int, why: str | None) -> str:
    return f"cannot listen on {host}:{port} ({what}): {why or 'address already in use'}"
