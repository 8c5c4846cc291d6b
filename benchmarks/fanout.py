"""The control plane as users run it, under load: M simulated proxies, real
files, real watching, real gRPC.

A real :class:`~sailplane.server.plane.ControlPlane` (the object ``sailplane serve``
runs) serves a generated mesh from a temporary directory; the simulated
proxies (:mod:`benchmarks.simclients`) run in a child process so their CPU is
not counted as the control plane's. Measured:

* cold start: every proxy connects at once; time until all are SYNCED, and
  the control plane's CPU seconds;
* file save -> all SYNCED: the mesh's YAML is edited on disk (a
  VirtualService weight, or one WorkloadEntry added or removed), saved
  atomically as an editor does, and timed until every proxy has ACKed its
  new snapshot; repeated, back and forth, for p50/p99; with the bytes and
  responses each push sent, by type.

"SYNCED" is judged on the server, as ``/debug/syncz`` shows it: a proxy's
stream has ACKed, for every type it subscribes to, the version of its current
snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.meshgen import MeshSpec, generate_texts, proxy_ids, write_texts
from benchmarks.report import rss_metrics
from sailplane.server.plane import ControlPlane, ServeOptions
from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SnapshotCache, StatusRegistry
from sailplane.xds.server import StreamHooks, StreamStatus
from sailplane.xds.types import SHORT_NAMES, VIRTUAL_HOST
from sailplane.xds.vhds import vhds_view

# The types the simulated proxies subscribe to (no secrets: they do no TLS).
SYNCED_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# Each Envoy has its own connection; the simulated ones share a few, or the
# client process would spend its time on thousands of HTTP/2 connections.
STREAMS_PER_CONNECTION = 10
CHANGES = ("weight", "endpoint")


class PushCounter:
    """Wraps the control plane's stream hooks: counts what every push sends,
    and tells :meth:`wait_synced` about ACKs as they happen (waiting by
    polling 2,000 streams' status would take the control plane's CPU)."""

    def __init__(
        self, inner: StreamHooks, cache: SnapshotCache, registry: StatusRegistry, vhds: bool
    ) -> None:
        self.inner = inner
        self.delta = vhds  # delta streams are served routes over VHDS (xds/vhds.py)
        self.cache = cache
        self.registry = registry
        self.responses: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.connects = 0
        # While wait_synced waits: node -> the versions it must ACK.
        self._targets: dict[str, dict[str, str]] = {}
        self._all_synced: asyncio.Future[None] | None = None

    async def on_connect(self, node: Any, peer: Any) -> str:
        node_id = await self.inner.on_connect(node, peer)
        self.connects += 1
        return node_id

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        self.inner.on_disconnect(node_id, stream_id)

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        self.inner.on_nack(node_id, type_url, version, message)

    def on_hold(self, node_id: str, outcome: str) -> None:
        pass

    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None:
        self.inner.on_push(node_id, type_url, version, size)
        short = SHORT_NAMES[type_url]
        self.responses[short] = self.responses.get(short, 0) + 1
        self.bytes[short] = self.bytes.get(short, 0) + size

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        self.inner.on_ack(node_id, type_url, version)
        target = self._targets.get(node_id)
        if target is None or target.get(type_url) != version:
            return
        if self._synced(node_id, target):
            del self._targets[node_id]
            if not self._targets and self._all_synced is not None:
                self._all_synced.set_result(None)

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.responses), dict(self.bytes)

    def _synced(self, node_id: str, target: Mapping[str, str]) -> bool:
        return _synced(self.registry.latest(node_id), target)

    async def wait_synced(self, node_ids: list[str], timeout: float) -> None:
        """Until every node has a stream that ACKed its current snapshot (as
        /debug/syncz shows it). Call when every node has its new snapshot."""
        deadline = time.monotonic() + timeout
        while self.connects < len(node_ids) or any(self.cache.get(n) is None for n in node_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.connects} of {len(node_ids)} proxies connected")
            await asyncio.sleep(0.01)
        targets = {}
        for node in node_ids:
            snapshot = self.cache.get(node)
            assert snapshot is not None
            target = {t: snapshot.version(t) for t in SYNCED_TYPES if snapshot.get(t).chunks}
            if self.delta and ROUTE in target:  # routes as VHDS serves them
                view = vhds_view(snapshot.get(ROUTE))
                target[ROUTE] = view.routes.version
                if view.vhosts.chunks:
                    target[VIRTUAL_HOST] = view.vhosts.version
            if not self._synced(node, target):
                targets[node] = target
        if not targets:
            return
        self._targets = targets
        self._all_synced = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._all_synced, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise TimeoutError(
                f"{len(self._targets)} of {len(node_ids)} proxies not synced after "
                f"{timeout:.0f} s (e.g. {sorted(self._targets)[0]})"
            ) from None
        finally:
            self._targets, self._all_synced = {}, None


def changed_spec(spec: MeshSpec, change: str) -> MeshSpec:
    """The mesh after one change: ``weight`` moves 5% of the first service's
    VirtualService between subsets; ``endpoint`` adds one WorkloadEntry."""
    if change == "endpoint":
        return dataclasses.replace(spec, extra_endpoints=spec.extra_endpoints + 1)
    if change == "weight":
        if not spec.subsets:
            raise ValueError("a weight change needs subsets (--subsets 2)")
        return dataclasses.replace(spec, weight_shift=spec.weight_shift + 5)
    raise ValueError(f"unknown change {change!r}; expected one of {', '.join(CHANGES)}")


def _synced(stream: StreamStatus | None, versions: Mapping[str, str]) -> bool:
    if stream is None:
        return False
    for type_url, version in versions.items():
        status = stream.types.get(type_url)
        if status is None or status.acked != version:
            return False
    return True


class ClientProcess:
    """The child process running the simulated proxies."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, target: str, node_ids: list[str], channels: int, delta: bool = False
    ) -> ClientProcess:
        setup = {"target": target, "node_ids": node_ids, "channels": channels, "delta": delta}
        return await cls.spawn("benchmarks.simclients", setup)

    @classmethod
    async def spawn(cls, module: str, setup: Mapping[str, Any], *args: str) -> ClientProcess:
        """``python -m module *args``, given ``setup`` as a JSON line; once it
        says ``ready``."""
        root = str(Path(__file__).resolve().parent.parent)
        # Appended, so a PYTHONPATH given to the benchmark (another checkout) wins.
        paths = [p for p in (os.environ.get("PYTHONPATH", ""), root) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        client = cls(proc)
        try:
            await client.send(json.dumps(setup))
            if (line := await client.readline()) != "ready":
                raise RuntimeError(f"client process did not start: {line!r}")
        except BaseException:
            await client.close()
            raise
        return client

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def readline(self) -> str:
        assert self.proc.stdout is not None
        return (await self.proc.stdout.readline()).decode().strip()

    async def stats(self, command: str = "stats") -> dict[str, Any]:
        await self.send(command)
        line = await self.readline()
        if not line:
            raise RuntimeError(f"client process exited ({await self.proc.wait()})")
        stats: dict[str, Any] = json.loads(line)
        return stats

    async def stop(self) -> dict[str, Any]:
        stats = await self.stats("stop")
        await self.close()
        return stats

    async def close(self) -> None:
        """Idempotent; kills the child if it is still running."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        if self.proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def _minus(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


async def _wait_applied(plane: ControlPlane, applied: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while plane.reloader.applied == applied:
        if time.monotonic() > deadline:
            raise TimeoutError("the control plane did not apply the saved change")
        await asyncio.sleep(0.002)


async def _change_rounds(
    plane: ControlPlane,
    counter: PushCounter,
    root: Path,
    spec: MeshSpec,
    change: str,
    rounds: int,
    node_ids: list[str],
    timeout: float,
) -> dict[str, Any]:
    """Save the change, then save it back, ``rounds`` times in all; each time
    from the file write to every proxy SYNCED."""
    texts = [generate_texts(changed_spec(spec, change)), generate_texts(spec)]
    times, applied_times, cpus, kinds = [], [], [], set()
    responses_total: dict[str, int] = {}
    bytes_total: dict[str, int] = {}
    # A quiet moment first, as between a team's edits: the control plane
    # settles its heap after a burst (sailplane/server/heap.py), not in the rounds.
    await asyncio.sleep(2.5)
    print(f"fanout: {rounds} {change} changes", file=sys.stderr, flush=True)
    for i in range(rounds):
        responses0, bytes0 = counter.totals()
        applied, cpu = plane.reloader.applied, time.process_time()
        start, wall = time.perf_counter(), time.time()
        if not write_texts(root, texts[i % 2]):
            raise RuntimeError("the change wrote no file")
        await _wait_applied(plane, applied, timeout)
        # When the reload finished (polling would see it only after the push
        # it starts has had the event loop).
        assert plane.reloader.applied_at is not None
        applied_times.append((plane.reloader.applied_at - wall) * 1000)
        await counter.wait_synced(node_ids, timeout)
        times.append((time.perf_counter() - start) * 1000)
        cpus.append(time.process_time() - cpu)
        kinds.add(plane.controller.last_apply)
        await asyncio.sleep(0.05)  # let stray responses land before counting
        responses1, bytes1 = counter.totals()
        for total, now, then in (
            (responses_total, responses1, responses0),
            (bytes_total, bytes1, bytes0),
        ):
            for k, v in _minus(now, then).items():
                total[k] = total.get(k, 0) + v
    if rounds % 2:  # leave the mesh as it was, for the next kind of change (untimed)
        applied = plane.reloader.applied
        write_texts(root, texts[1])
        await _wait_applied(plane, applied, timeout)
        await counter.wait_synced(node_ids, timeout)
    proxies = len(node_ids)
    pushed_bytes = sum(bytes_total.values())
    return {
        "changes": rounds,
        "save_to_synced_p50_ms": percentile(times, 50),
        "save_to_synced_p99_ms": percentile(times, 99),
        "save_to_synced_max_ms": max(times),
        # the watcher's debounce (100 ms quiet), loading and translating
        "save_to_applied_p50_ms": percentile(applied_times, 50),
        "server_cpu_s_per_change": statistics.mean(cpus),
        "translation": "/".join(sorted(kinds)),
        "types_pushed": sorted(bytes_total),
        "responses_per_change": {k: v / rounds for k, v in sorted(responses_total.items())},
        "bytes_per_change": pushed_bytes / rounds,
        "bytes_per_proxy_per_change": pushed_bytes / rounds / proxies,
        "bytes_per_change_by_type": {k: v / rounds for k, v in sorted(bytes_total.items())},
    }


async def run_fanout(
    spec: MeshSpec,
    proxies: int,
    delta: bool = False,
    changes: int = 10,
    timeout: float = 600.0,
    per_connection: int = STREAMS_PER_CONNECTION,
) -> dict[str, dict[str, Any]]:
    """Cold start of ``proxies`` streams, then ``changes`` saves of each kind
    in :data:`CHANGES`. Returns ``{"fanout": ..., "<change>": ..., "rss": ...}``."""
    logging.getLogger("sailplane").setLevel(logging.WARNING)
    node_ids = proxy_ids(spec, proxies)
    with tempfile.TemporaryDirectory(prefix="sailplane-bench-") as tmp:
        root = Path(tmp)
        write_texts(root, generate_texts(spec))
        options = ServeOptions(
            config_dir=root, xds_address=("127.0.0.1", 0), monitor_address=("127.0.0.1", 0)
        )
        start = time.perf_counter()
        plane = ControlPlane(options)
        # Every simulated proxy connects from loopback: more than the
        # default allows one host (limits.py).
        plane.ads.limits = dataclasses.replace(
            plane.ads.limits, per_host=max(plane.ads.limits.per_host, proxies + 100)
        )
        await plane.start()
        start_ms = (time.perf_counter() - start) * 1000
        counter = PushCounter(plane.hooks, plane.cache, plane.status, delta and plane.ads.vhds)
        plane.ads.admission = plane.ads.observer = counter
        rss_before = rss_metrics()
        channels = max(1, math.ceil(proxies / per_connection))
        clients = None
        try:
            clients = await ClientProcess.start(
                f"127.0.0.1:{plane.xds_port}", node_ids, channels, delta
            )
            cpu, start = time.process_time(), time.perf_counter()
            await clients.send("go")
            await counter.wait_synced(node_ids, timeout)
            cold_ms = (time.perf_counter() - start) * 1000
            cold_cpu = time.process_time() - cpu
            cold_responses, cold_bytes = counter.totals()
            rss_cold = rss_metrics()
            cold_stats = await clients.stats()
            rounds = {}
            for change in CHANGES:
                if change == "weight" and not spec.subsets:
                    continue
                rounds[change] = await _change_rounds(
                    plane, counter, root, spec, change, changes, node_ids, timeout
                )
            final = await clients.stop()
        finally:
            if clients is not None:
                await clients.close()
            await plane.stop()
    rss = rss_metrics()
    return {
        "fanout": {
            "proxies": proxies,
            "channels": channels,
            "protocol": "delta" if delta else "sotw",
            "start_ms": start_ms,
            "cold_sync_ms": cold_ms,
            "cold_server_cpu_s": cold_cpu,
            "cold_client_cpu_s": cold_stats["cpu_s"],
            "cold_responses": sum(cold_responses.values()),
            "cold_bytes": sum(cold_bytes.values()),
            "cold_bytes_by_type": dict(sorted(cold_bytes.items())),
            "throttle_peak_waiting": plane.ads.throttle.peak_waiting,
            # slots given up by a stream that had not answered in time
            "throttle_slot_timeouts": sum(plane.ads.throttle.timed_out.values()),
            "heap_settles": plane.heap.settles,
            "heap_last_settle_ms": plane.heap.last_settle_ms,
            "client_errors": final["errors"],
            "client_first_error": final["first_error"],
        },
        **{f"change_{name}": result for name, result in rounds.items()},
        "rss": {
            "before_clients_mb": rss_before["current_mb"],
            "after_cold_start_mb": rss_cold["current_mb"],
            "peak_at_cold_start_mb": rss_cold["peak_mb"],
            "end_mb": rss["current_mb"],
            "peak_mb": rss["peak_mb"],
            "per_proxy_kb": (rss_cold["current_mb"] - rss_before["current_mb"]) * 1024 / proxies,
        },
    }
