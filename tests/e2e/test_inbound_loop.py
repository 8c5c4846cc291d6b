"""A sidecar in front of an app that is down must not call itself.

The compose pods' layout: the sidecar's inbound listener binds
``0.0.0.0:PORT`` (its WorkloadEntry address is a DNS name) and the app
``127.0.0.1:PORT`` behind it, both with SO_REUSEPORT, so Linux gives each
connection to the most specific socket. With the app gone, the inbound
cluster's connections to ``127.0.0.1:PORT`` reach the sidecar's own
listener; before the loop guard (translate/loopguard.py) a request went
round and round until its caller gave up. Now the inbound cluster connects
from 127.0.0.6 (the app sees it), the listener closes those connections at
once, and a call fails fast: 503 for HTTP, a closed connection for TCP.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.mesh import Mesh, WorkloadSpec
from tests.support.procs import free_port, wait_for

pytestmark = pytest.mark.e2e

CALLS = 5


@dataclass
class PodSpec(WorkloadSpec):
    """A workload named by DNS (its sidecar binds 0.0.0.0) whose app listens
    on 127.0.0.1: a compose pod. Callers reach the sidecar on another
    loopback address of the host, which only the wildcard listener covers."""

    @property
    def address(self) -> str:
        return "loop-pod.test"

    @property
    def app_address(self) -> str:
        return "127.0.0.1"

    @property
    def caller_view(self) -> str:
        return f"127.10.{self.network}.{self.index}"


class PeerHTTP(socketserver.BaseRequestHandler):
    """Answers any HTTP request with 200 and the peer's address."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data and (chunk := self.request.recv(65536)):
            data += chunk
        body = self.client_address[0].encode()
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )


class PeerTCP(socketserver.BaseRequestHandler):
    """Says the peer's address first (a server-first protocol), then closes."""

    def handle(self) -> None:
        self.request.sendall(self.client_address[0].encode() + b"\n")


class ReusePortServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    allow_reuse_port = True  # beside Envoy's 0.0.0.0 listener on the same port


@contextlib.contextmanager
def app(port: int, handler: type[socketserver.BaseRequestHandler]) -> Iterator[None]:
    """The app on 127.0.0.1:``port``, from start to the end of the block."""
    server = ReusePortServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def registry(pod: PodSpec, protocol: str) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "loop", "namespace": "default"},
            "spec": {
                "selector": {"app": "loop"},
                "ports": [{"name": protocol, "port": pod.port}],
            },
        },
        pod.entry(),
    ]


PEER_AUTHENTICATION = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: mode}}
spec:
  selector: {{matchLabels: {{app: loop}}}}
  mtls: {{mode: {mode}}}
"""


def http_call(pod: PodSpec) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(pod.caller_view, pod.port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": "loop"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def tcp_call(pod: PodSpec) -> bytes:
    """What the app says; b"" when the sidecar closes the connection."""
    with socket.create_connection((pod.caller_view, pod.port), timeout=5) as sock:
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1024):
                data += chunk
        return data


def start_pod(mesh: Mesh, protocol: str, mode: str) -> PodSpec:
    pod = PodSpec("loop", {"app": "loop"}, 1, mesh.network, port=free_port("0.0.0.0"))
    mesh.workloads[pod.name] = pod
    mesh.write("registry.yaml", registry(pod, protocol))
    mesh.write("mode.yaml", PEER_AUTHENTICATION.format(mode=mode))
    mesh.start_control_plane()
    mesh.start_envoy(pod)
    # Not wait_synced: a service of DNS-named workloads has no EDS to sync.
    mesh.wait_listening(pod)
    return pod


def counters(mesh: Mesh, pod: PodSpec) -> tuple[int, int]:
    """Connections of the inbound cluster, and those the loop guard refused."""
    return (
        mesh.stat(pod, f"cluster.inbound|{pod.port}||.upstream_cx_total"),
        mesh.stat(pod, f"tcp.inbound_{pod.port}.loop_guard.downstream_cx_total"),
    )


def test_http_to_a_stopped_app_fails_fast_instead_of_looping(mesh: Mesh) -> None:
    pod = start_pod(mesh, "http", "PERMISSIVE")  # plaintext callers welcome
    with app(pod.port, PeerHTTP):
        # The app sees the sidecar's connections come from 127.0.0.6.
        assert wait_for(lambda: http_call(pod)[0] == 200, what="200 through the sidecar")
        assert http_call(pod) == (200, b"127.0.0.6")

    connections, refused = counters(mesh, pod)
    for _ in range(CALLS):
        started = time.monotonic()
        status, _ = http_call(pod)
        assert status == 503
        assert time.monotonic() - started < 1.0
    after = counters(mesh, pod)
    # One connection per call (its loop back is refused), not thousands.
    assert after[0] - connections <= 2 * CALLS, after
    assert after[1] - refused >= CALLS, after

    with app(pod.port, PeerHTTP):
        assert http_call(pod) == (200, b"127.0.0.6")


def test_tcp_to_a_stopped_app_fails_fast_instead_of_looping(mesh: Mesh) -> None:
    """A TCP port is the hard case: its tcp_proxy connects upstream as a
    connection is accepted, before any byte that a filter could judge. (A
    DISABLE port: under PERMISSIVE Envoy's TLS inspector would wait for the
    client to speak, and this app speaks first.)"""
    pod = start_pod(mesh, "tcp", "DISABLE")
    with app(pod.port, PeerTCP):
        assert tcp_call(pod) == b"127.0.0.6\n"

    connections, refused = counters(mesh, pod)
    for _ in range(CALLS):
        started = time.monotonic()
        assert tcp_call(pod) == b""
        assert time.monotonic() - started < 1.0
    time.sleep(0.5)  # a loop would go on after the call; give it the time to show
    after = counters(mesh, pod)
    assert after[0] - connections <= 2 * CALLS, after
    assert after[1] - refused >= CALLS, after

    with app(pod.port, PeerTCP):
        assert tcp_call(pod) == b"127.0.0.6\n"
