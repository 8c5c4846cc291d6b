"""Policy changes bite on the next request of every open connection (issue
#14), with real Envoys at their DEFAULT drain settings (600 s, gradual).

AuthorizationPolicy and PeerAuthentication STRICT reach the inbound side as
route configuration (RDS), which Envoy applies to the next request of every
connection, including those still on a replaced filter chain; a listener
change alone would leave them on the old chain until it drains.

Each client reuses one HTTP/1.1 connection, a request every ~60 ms, and
every response is counted: nothing the policy allows may fail.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

SIDECAR = {"security.istio.io/tlsMode": "istio"}
URL = "http://weather-backend.backend:5000/api/weather"
BITE = 1.5  # seconds from the file save to the first response under the new policy
INTERVAL = 0.06

# In the root namespace: mesh-wide, so the gateway's own routes carry it too.
DENY_ALL = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: policy, namespace: istio-system}
spec: {}
"""

ALLOW_API = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: policy, namespace: istio-system}
spec:
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/api/*"]
"""

STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: backend}
spec:
  mtls: {mode: STRICT}
"""

PERMISSIVE = STRICT.replace("STRICT", "PERMISSIVE")

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-ingress}
spec:
  hosts: ["*"]
  gateways: [ingress]
  http:
  - route:
    - destination: {host: weather-backend.backend.svc.cluster.local, port: {number: 5000}}
"""


@dataclass(frozen=True)
class Sample:
    sent: float  # time.monotonic() when the request was sent
    outcome: str  # "200", "403", ... or the exception's class name
    received: float  # time.monotonic() when its response (or error) was in
    port: int | None  # the client's local port: which connection carried it
    closed: bool  # the server asked to close the connection after this response


@dataclass
class KeepAliveClient:
    """One ``http.client.HTTPConnection``, reused for every request; it
    reconnects only when the server closed the connection."""

    name: str
    address: str
    target: str
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        host, port = self.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                local: int | None = None
                try:
                    conn.request("GET", self.target)
                    local = conn.sock.getsockname()[1] if conn.sock else None
                    response = conn.getresponse()
                    response.read()
                    outcome, closed = str(response.status), response.will_close
                except (OSError, http.client.HTTPException) as exc:
                    outcome, closed = type(exc).__name__, True
                    conn.close()
                self.samples.append(Sample(sent, outcome, time.monotonic(), local, closed))
                self._stop.wait(INTERVAL)
        finally:
            conn.close()

    def after(self, t: float) -> list[Sample]:
        return [s for s in self.samples if s.sent >= t]

    def first(self, t: float, outcomes: set[str], timeout: float = 10.0) -> Sample:
        """The first response at or after ``t`` whose outcome is in ``outcomes``."""
        return wait_for(  # type: ignore[no-any-return]
            lambda: next((s for s in self.after(t) if s.outcome in outcomes), None),
            timeout,
            what=f"{self.name}: {sorted(outcomes)} after the change",
        )


@contextmanager
def traffic(*clients: KeepAliveClient) -> Iterator[None]:
    threads = [threading.Thread(target=c.run, name=c.name, daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    try:
        for client in clients:
            wait_for(
                lambda c=client: sum(s.outcome == "200" for s in c.samples) >= 5,
                what=f"{client.name} warmed up",
            )
        yield
    finally:
        for client in clients:
            client._stop.set()
        for thread in threads:
            thread.join(10)


def _mesh(mesh: Mesh, *gateways: WorkloadSpec) -> tuple[WorkloadSpec, WorkloadSpec]:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", **SIDECAR},
        service_account="weather-frontend",
    )
    backend = mesh.workload(
        "weather-backend",
        {"app": "weather-backend", **SIDECAR},
        namespace="backend",
        service_account="weather-backend",
    )
    mesh.write_registry([service("weather-backend", namespace="backend")])
    if gateways:
        mesh.write("gateway.yaml", GATEWAY)
    mesh.start_control_plane()
    mesh.start_app(backend)
    for spec in (backend, frontend, *gateways):
        # Envoy's own drain settings: 600 s, gradual.
        mesh.start_envoy(spec, drain_time_s=None, detect_role=spec in gateways)
    mesh.wait_synced(frontend.id, backend.id, *(g.id for g in gateways))
    for spec in (backend, frontend, *gateways):
        mesh.wait_listening(spec)
    return frontend, backend


def _clients(frontend: WorkloadSpec, backend: WorkloadSpec) -> tuple[KeepAliveClient, ...]:
    # Through the caller's sidecar (mTLS, auto mTLS), and a plaintext client
    # without a sidecar on the backend's inbound port.
    return (
        KeepAliveClient("sidecar", frontend.outbound, URL),
        KeepAliveClient("plaintext", f"{backend.address}:5000", "/api/weather"),
    )


def _save(mesh: Mesh, file: str, text: str) -> float:
    saved = time.monotonic()
    mesh.write(file, text)
    return saved


def _unexpected(
    client: KeepAliveClient, phases: list[tuple[float, set[str]]], until: float
) -> list[Sample]:
    """Samples outside what the policy in force allows. ``phases``: (time of
    the save, outcomes the new policy gives), in order. Until the new policy's
    first response, the previous outcomes are still fine; from then on, only
    the new ones (a policy never flaps back)."""
    bad = []
    previous: set[str] = set()
    for index, (saved, outcomes) in enumerate(phases):
        end = phases[index + 1][0] if index + 1 < len(phases) else until
        switched = False
        for sample in (s for s in client.samples if saved <= s.sent < end):
            if sample.outcome in outcomes:
                switched = True
            elif switched or sample.outcome not in previous:
                bad.append(sample)
        previous = outcomes
    return bad


def _report(name: str, seconds: float) -> None:
    print(f"{name}: {seconds:.3f} s")
    assert seconds <= BITE, f"{name}: {seconds:.3f} s > {BITE} s"


def test_authorization_policy_bites_on_open_connections(mesh: Mesh) -> None:
    # The ingress gateway serves the Gateway's port 80 on 8080 (no privileges).
    gateway = mesh.workload("ingress-gateway", {"istio": "ingressgateway"}, ports={"http": 8080})
    frontend, backend = _mesh(mesh, gateway)
    clients = (
        *_clients(frontend, backend),
        KeepAliveClient("gateway", f"{gateway.address}:8080", "/api/weather"),
    )
    inbound_connections = "http.inbound_5000.downstream_cx_total"
    modified = "listener_manager.listener_modified"
    with traffic(*clients):
        connections = mesh.stat(backend, inbound_connections)
        listeners = {s.name: mesh.stat(s, modified) for s in (backend, gateway)}
        ports = {c.name: c.samples[-1].port for c in clients}

        denied_at = _save(mesh, "policy.yaml", DENY_ALL)
        for client in clients:
            first = client.first(denied_at, {"403"})
            _report(f"{client.name}: deny-all save -> first 403", first.received - denied_at)
            # On the connection that was open: the client's own ...
            assert first.port == ports[client.name], client.name
        # ... and, through the sidecar, its connection to the backend (the
        # backend accepted no new one).
        assert mesh.stat(backend, inbound_connections) == connections
        time.sleep(1.0)  # and it stays denied

        allowed_at = _save(mesh, "policy.yaml", ALLOW_API)
        for client in clients:
            first = client.first(allowed_at, {"200"})
            _report(f"{client.name}: ALLOW save -> first 200", first.received - allowed_at)
        time.sleep(1.0)
        end = time.monotonic()
    assert mesh.stat(backend, inbound_connections) == connections
    # The gateway denied by itself, by its routes' RBAC (before the backend could).
    assert sum(_counters(mesh, gateway, "rbac.allow.denied")) > 0
    # An AuthorizationPolicy change is an RDS-only push: Envoy replaced no
    # listener, so no connection was left on a draining filter chain.
    assert {s.name: mesh.stat(s, modified) for s in (backend, gateway)} == listeners
    phases = [(0.0, {"200"}), (denied_at, {"403"}), (allowed_at, {"200"})]
    for client in clients:
        assert not _unexpected(client, phases, end), client.name
    print({c.name: len(c.samples) for c in clients}, "responses, 0 unexpected")


def _counters(mesh: Mesh, spec: WorkloadSpec, suffix: str) -> list[int]:
    """Every counter of ``spec``'s Envoy whose name ends with ``suffix``."""
    lines = mesh.admin(spec, "/stats?usedonly").splitlines()
    return [
        int(line.rpartition(": ")[2]) for line in lines if line.partition(":")[0].endswith(suffix)
    ]


def test_strict_mtls_refuses_an_open_plaintext_connection(mesh: Mesh) -> None:
    frontend, backend = _mesh(mesh)
    sidecar, plaintext = clients = _clients(frontend, backend)
    # A plaintext connection opened after STRICT fails its handshake instead.
    refused = {"403", "RemoteDisconnected", "ConnectionResetError", "BadStatusLine"}
    with traffic(*clients):
        modified = mesh.stat(backend, "listener_manager.listener_modified")
        plaintext_port = plaintext.samples[-1].port

        strict_at = _save(mesh, "peer.yaml", STRICT)
        first = plaintext.first(strict_at, refused)
        _report("plaintext: STRICT save -> first refusal", first.received - strict_at)
        before = [s for s in plaintext.samples if s.sent < first.sent]
        if not any(s.closed for s in before if s.sent >= strict_at):
            # Unless the drain closed it first (a chance of ~1/600 a request):
            # refused on the connection that was open, by the route's rule.
            assert (first.outcome, first.port) == ("403", plaintext_port)
        same = first.port == plaintext_port
        print(f"plaintext: refused by {first.outcome}, on the open connection: {same}")
        wait_for(
            lambda: mesh.stat(backend, "listener_manager.listener_modified") > modified,
            what="the filter chain change applied too",
        )
        time.sleep(1.0)  # the mTLS caller goes on, on the old chain and the new

        permissive_at = _save(mesh, "peer.yaml", PERMISSIVE)
        back = plaintext.first(permissive_at, {"200"})
        _report("plaintext: PERMISSIVE save -> first 200", back.received - permissive_at)
        time.sleep(1.0)
        end = time.monotonic()
    # The mTLS caller never saw a failure, through both changes.
    assert not _unexpected(sidecar, [(0.0, {"200"})], end)
    phases = [(0.0, {"200"}), (strict_at, refused), (permissive_at, {"200"})]
    assert not _unexpected(plaintext, phases, end)
    print({c.name: len(c.samples) for c in clients}, "responses, 0 unexpected")
