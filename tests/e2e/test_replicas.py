"""Several `sailplane serve` replicas on one etcd, with real Envoys: one
apply reaches proxies of either replica; mTLS between proxies of different
replicas (each replica with its own intermediate of one root); a replica
killed -9 under traffic; etcd stopped and restarted; a three-member etcd
cluster losing one member. Measured figures are printed (pytest -s)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_live_config import RULE, WEATHER, split, versions
from tests.e2e.test_security import STRICT
from tests.support.etcd import Etcd, EtcdCluster
from tests.support.mesh import OUTBOUND_STATS, Mesh, WorkloadSpec, service
from tests.support.procs import ENVOY, PYTHON, Process, free_ports, http_get, wait_for
from tests.support.traffic import Client, Load, Reply

pytestmark = pytest.mark.e2e


def sailplane(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "sailplane", *argv], capture_output=True, text=True, timeout=60
    )


def apply(mesh: Mesh, url: str) -> None:
    done = sailplane("apply", "-f", str(mesh.config_dir), "--config-store", url)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Replica:
    name: str
    ca_dir: Path
    xds_port: int
    secure_port: int
    monitor_port: int
    process: Process

    def get(self, path: str) -> Any:
        status, body = http_get(f"http://127.0.0.1:{self.monitor_port}{path}")
        assert status == 200, body
        return json.loads(body)

    def alive(self) -> bool:
        return self.process.alive()

    def synced(self, proxy: str) -> bool:
        for stream in self.get("/debug/syncz"):
            if stream["proxy"] == proxy:
                kinds = ("clusters", "listeners", "endpoints", "routes")
                return all(stream["types"].get(k, {}).get("state") == "SYNCED" for k in kinds)
        return False


class Replicas:
    """Replicas of one test, each with its own intermediate CA of the mesh's root."""

    def __init__(self, mesh: Mesh, url: str) -> None:
        self.mesh = mesh
        self.url = url

    def start(self, name: str, url: str = "") -> Replica:
        ca_dir = self.mesh.config_dir.parent / f"ca-{name}"
        done = sailplane(
            "ca", "intermediate", name, "--ca-dir", str(self.mesh.ca_dir), "--out-dir", str(ca_dir)
        )
        assert done.returncode == 0, done.stderr
        xds, secure, monitor = free_ports(3)
        process = self.mesh.group.start(
            f"sailplane-{name}",
            [
                *(PYTHON, "-m", "sailplane", "--log-level", "debug", "serve"),
                *("--config-store", url or self.url, "--replica-name", name),
                *("--xds-address", f"127.0.0.1:{xds}", "--secure-xds-address"),
                *(f"127.0.0.1:{secure}", "--monitor-address", f"127.0.0.1:{monitor}"),
                *("--ca-dir", str(ca_dir)),
            ],
        )
        replica = Replica(name, ca_dir, xds, secure, monitor, process)
        wait_for(
            lambda: http_get(f"http://127.0.0.1:{monitor}/ready")[0] == 200, what=f"{name} /ready"
        )
        return replica

    def envoy(self, spec: WorkloadSpec, *replicas: Replica) -> Process:
        """An Envoy whose bootstrap names ``replicas`` (mTLS xDS), with a
        certificate from the first one's CA."""
        out = self.mesh.config_dir.parent / f"bootstrap-{spec.name}.yaml"
        addresses = [a for r in replicas for a in ("--xds-address", f"127.0.0.1:{r.secure_port}")]
        done = sailplane(
            *("bootstrap", spec.name, "--namespace", spec.namespace),
            *("--config-dir", str(self.mesh.config_dir), "--ca-dir", str(replicas[0].ca_dir)),
            *addresses,
            *("--admin-address", spec.admin, "--outbound-address", spec.outbound),
            *("--app-address", spec.app_address, "-o", str(out)),
        )
        assert done.returncode == 0, done.stderr
        argv = [ENVOY, "-c", str(out), "--concurrency", "1", "--disable-hot-restart"]
        envoy = self.mesh.group.start(
            f"envoy-{spec.name}", [*argv, "--log-level", "warning", "--drain-time-s", "1"]
        )
        self.mesh.envoys[spec.name] = envoy
        return envoy

    def status(self) -> dict[str, Any]:
        done = sailplane("status", "--config-store", self.url, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def weather_mesh(mesh: Mesh, url: str, *frontends: str) -> list[WorkloadSpec]:
    """Frontends (sidecars, started by the test) and backends v1, v2 without
    sidecars, all routed to v1; the configuration applied to the store."""
    specs = [mesh.workload(name, {"app": "weather-frontend"}) for name in frontends]
    backends = [
        mesh.workload(f"weather-backend-{v}", {"app": "weather-backend", "version": v})
        for v in ("v1", "v2")
    ]
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write("rule.yaml", RULE)
    mesh.write("vs.yaml", split(100, 0))
    apply(mesh, url)
    for spec in backends:
        extra = ("--service", spec.labels["app"])
        mesh.start_app(spec, "backend", "", "http://unused:5000", *extra, sidecar=False)
    return specs


def serving(mesh: Mesh, spec: WorkloadSpec, *replicas: Replica) -> Replica:
    """The replica ``spec``'s Envoy is connected to, once SYNCED, listeners live."""
    found: Replica = wait_for(
        lambda: next((r for r in replicas if r.alive() and r.synced(spec.id)), None),
        what=f"{spec.name} SYNCED",
    )
    mesh.wait_listening(spec)
    return found


def only(client: Client, expected: set[str]) -> bool:
    return versions(client, 3) == expected


def failed(results: list[Reply | Exception]) -> list[Reply | Exception]:
    return [r for r in results if isinstance(r, Exception) or r.status != 200]


def test_one_apply_reaches_envoys_of_both_replicas(mesh: Mesh, etcd: Etcd) -> None:
    url = etcd.url("/e2e")
    front_a, front_b = weather_mesh(mesh, url, "frontend-a", "frontend-b")
    replicas = Replicas(mesh, url)
    one, two = replicas.start("replica-1"), replicas.start("replica-2")
    replicas.envoy(front_a, one)
    replicas.envoy(front_b, two)
    assert serving(mesh, front_a, one) is one and serving(mesh, front_b, two) is two
    with Client(front_a.outbound) as client_a, Client(front_b.outbound) as client_b:
        wait_for(lambda: only(client_a, {"v1"}) and only(client_b, {"v1"}), what="v1")
        mesh.write("vs.yaml", split(0, 100))
        started = time.monotonic()
        apply(mesh, url)
        applied = time.monotonic()
        wait_for(
            lambda: only(client_a, {"v2"}) and only(client_b, {"v2"}), 10, 0.01, what="v2 on both"
        )
        done = time.monotonic()
    print(
        f"\napply -> both Envoys route to v2: {done - applied:.2f} s after `sailplane apply` "
        f"returned ({done - started:.2f} s including the CLI's own run)"
    )
    assert done - applied < 10
    configz = [one.get("/debug/configz"), two.get("/debug/configz")]
    assert [c["replica"] for c in configz] == ["replica-1", "replica-2"]
    assert configz[0]["version"] == configz[1]["version"] != ""

    # A replica writes its record at most every BATCH seconds after a change,
    # so the store may show the previous version for a moment after the apply.
    def registered() -> dict[str, Any] | None:
        answer = replicas.status()
        versions = {r["version"] for r in answer["replicas"]}
        current = versions == {configz[0]["version"]}
        return answer if len(answer["proxies"]) == 2 and current else None

    status = wait_for(registered, what="both proxies and the applied version in the store")
    assert [r["name"] for r in status["replicas"]] == ["replica-1", "replica-2"]
    assert {r["version"] for r in status["replicas"]} == {configz[0]["version"]}
    assert all(r["alive"] for r in status["replicas"])
    served = {p["node_id"]: p["replica"] for p in status["proxies"]}
    assert served == {front_a.id: "replica-1", front_b.id: "replica-2"}
    text = sailplane("status", "--config-store", url)
    assert text.returncode == 0 and front_a.id in text.stdout and "replica-2" in text.stdout


def test_mtls_between_proxies_of_two_replicas(mesh: Mesh, etcd: Etcd) -> None:
    url = etcd.url("/e2e")
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend"},
        service_account="weather-frontend",
        annotations=OUTBOUND_STATS,
    )
    backend = mesh.workload(
        "weather-backend",
        {"app": "weather-backend", "security.istio.io/tlsMode": "istio"},
        service_account="weather-backend",
    )
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write("strict.yaml", STRICT)
    apply(mesh, url)
    replicas = Replicas(mesh, url)
    one, two = replicas.start("replica-a"), replicas.start("replica-b")
    mesh.start_app(backend)
    replicas.envoy(backend, two)
    replicas.envoy(frontend, one)
    assert serving(mesh, backend, two) is two and serving(mesh, frontend, one) is one
    with Client(frontend.outbound) as client:
        reply = wait_for(lambda: (r := client.get(WEATHER)).status == 200 and r, what="200")
    assert reply.json()["version"] == "v1"
    cluster = "cluster.outbound|5000||weather-backend.default.svc.cluster.local"
    assert mesh.stat(frontend, f"{cluster}.ssl.handshake") > 0
    # The backend's certificate (replica B's intermediate) chains to the root
    # the frontend (replica A's) trusts, and the other way round.
    certs = json.loads(mesh.admin(backend, "/certs"))["certificates"]
    assert any("weather-backend" in json.dumps(c) for c in certs)


def test_replica_killed_under_traffic(mesh: Mesh, etcd: Etcd) -> None:
    url = etcd.url("/e2e")
    (frontend,) = weather_mesh(mesh, url, "weather-frontend")
    replicas = Replicas(mesh, url)
    one, two = replicas.start("replica-1"), replicas.start("replica-2")
    replicas.envoy(frontend, one, two)
    first = serving(mesh, frontend, one, two)
    other = two if first is one else one
    with Load(lambda c: c.get(WEATHER), frontend.outbound).start() as load:
        wait_for(lambda: load.count() > 20, what="traffic")
        first.process.popen.kill()  # kill -9
        first.process.popen.wait(5)
        killed = time.monotonic()
        wait_for(lambda: other.synced(frontend.id), 10, 0.02, what="reconnected to the other")
        reconnected = time.monotonic() - killed
        print(f"\nkill -9 -> Envoy SYNCED on the other replica: {reconnected:.2f} s")
        assert mesh.stat(frontend, "control_plane.connected_state") == 1
        # A change applied afterwards reaches it, through the other replica.
        mesh.write("vs.yaml", split(0, 100))
        apply(mesh, url)
        with Client(frontend.outbound) as client:
            wait_for(lambda: only(client, {"v2"}), 10, what="v2 after the failover")
        after = load.count()
        wait_for(lambda: load.count() > after + 20, what="more traffic")
    results = load.results
    assert len(results) > 50 and failed(results) == [], failed(results)[:3]
    print(f"{len(results)} requests during and after the kill, none failed")
    assert reconnected < 5


def test_etcd_down_keeps_serving_and_resyncs(mesh: Mesh, etcd: Etcd) -> None:
    url = etcd.url("/e2e")
    (frontend,) = weather_mesh(mesh, url, "weather-frontend")
    replicas = Replicas(mesh, url)
    one = replicas.start("replica-1")
    replicas.envoy(frontend, one)
    serving(mesh, frontend, one)
    version = one.get("/debug/configz")["version"]
    with Load(lambda c: c.get(WEATHER), frontend.outbound).start() as load:
        etcd.kill()
        wait_for(lambda: one.get("/debug/configz")["config_store"]["up"] is False, what="down")
        mesh.write("vs.yaml", split(0, 100))
        refused = sailplane("apply", "-f", str(mesh.config_dir), "--config-store", url)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "etcd is unreachable" in refused.stderr, refused.stderr
        time.sleep(1)
        assert one.get("/debug/configz")["version"] == version
        down = load.count()
        etcd.start()  # the same data directory and ports
        restarted = time.monotonic()
        apply(mesh, url)
        with Client(frontend.outbound) as client:
            wait_for(lambda: only(client, {"v2"}), 15, 0.05, what="v2 after etcd is back")
        print(f"\netcd back -> new change served: {time.monotonic() - restarted:.2f} s")
    results = load.results
    assert down > 10 and failed(results) == [], failed(results)[:3]
    assert one.get("/debug/configz")["config_store"]["up"] is True
    wait_for(lambda: [r["name"] for r in replicas.status()["replicas"]] == ["replica-1"])


def test_three_member_etcd_tolerates_one_down(mesh: Mesh, etcd_cluster: EtcdCluster) -> None:
    url = etcd_cluster.url("/e2e")
    (frontend,) = weather_mesh(mesh, url, "weather-frontend")
    replicas = Replicas(mesh, url)
    one = replicas.start("replica-1")
    replicas.envoy(frontend, one)
    serving(mesh, frontend, one)
    with Client(frontend.outbound) as client:
        wait_for(lambda: only(client, {"v1"}), what="v1")
        etcd_cluster.members[0].kill()  # the endpoint every client tries first
        mesh.write("vs.yaml", split(0, 100))
        started = time.monotonic()
        apply(mesh, url)
        wait_for(lambda: only(client, {"v2"}), 15, 0.05, what="v2 with a member down")
        print(f"\none member down: apply -> served in {time.monotonic() - started:.2f} s")
    assert one.get("/debug/configz")["config_store"]["up"] is True
