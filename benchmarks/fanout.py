"""Push fan-out: one control plane, M simulated proxies on real ADS streams.

The server side (grpc.aio server, :class:`AdsServer`, :class:`SnapshotCache`,
:class:`Controller`) runs in this process; the proxies run in a child
process (:mod:`benchmarks.simclients`) so their CPU is not counted as the
server's. Convergence is judged on the server: a proxy is synced when its
stream has ACKed, for every type it is sent, the version in its current
snapshot (the same test as ``/debug/syncz`` showing SYNCED).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from benchmarks.meshgen import MeshSpec, generate_texts, load_mesh, proxy_ids
from benchmarks.report import rss_metrics
from sailplane.config.loader import load_texts
from sailplane.controller import Controller
from sailplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    AdsServer,
    Snapshot,
    SnapshotCache,
    StatusRegistry,
    TypeResources,
)
from sailplane.xds.status import StreamStatus
from sailplane.xds.types import SHORT_NAMES

# The types an Envoy-like client subscribes to (no secrets without mTLS).
SYNCED_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
STREAMS_PER_CHANNEL = 100
# As sailplane.app.ControlPlane.start.
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]
CHANGES = ("endpoint", "port", "weight")


class CountingController(Controller):
    """The real controller, counting what the server pushes."""

    def __init__(self, cache: SnapshotCache) -> None:
        super().__init__(cache)
        self.pushes = 0
        self.bytes_sent = 0

    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None:
        self.pushes += 1
        self.bytes_sent += size


@dataclasses.dataclass
class EncodeCounter:
    calls: int = 0
    resources: int = 0
    by_type: dict[str, int] = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def count_encodings() -> Iterator[EncodeCounter]:
    """Count protobuf serialisation of resources: every resource sailplane
    serves is encoded by :meth:`TypeResources.build`, and only there."""
    counter = EncodeCounter()
    original = TypeResources.__dict__["build"]

    def build(cls: type[TypeResources], type_url: str, messages: Any) -> TypeResources:
        items: list[tuple[str, Message]] = list(messages)
        short = SHORT_NAMES.get(type_url, type_url)
        counter.calls += 1
        counter.resources += len(items)
        counter.by_type[short] = counter.by_type.get(short, 0) + len(items)
        result: TypeResources = original.__func__(cls, type_url, items)
        return result

    TypeResources.build = classmethod(build)  # type: ignore[assignment]
    try:
        yield counter
    finally:
        TypeResources.build = original  # type: ignore[method-assign]


def _synced(stream: StreamStatus | None, snapshot: Snapshot | None) -> bool:
    if stream is None or snapshot is None:
        return False
    for type_url in SYNCED_TYPES:
        if not snapshot.get(type_url).chunks:
            continue  # nothing to send, nothing to ACK
        status = stream.types.get(type_url)
        if status is None or status.acked != snapshot.version(type_url):
            return False
    return True


async def wait_synced(
    cache: SnapshotCache,
    registry: StatusRegistry,
    node_ids: list[str],
    timeout: float,
    poll: float = 0.01,
) -> None:
    """Until every node has one stream that ACKed its current snapshot.

    Polling costs the server ~1 ms per round at 1,000 streams, so measured
    times carry up to ``poll`` of resolution and ~10% of polling overhead."""
    pending = set(node_ids)
    deadline = time.monotonic() + timeout
    while True:
        streams = {s.proxy: s for s in registry.streams()}
        pending = {n for n in pending if not _synced(streams.get(n), cache.get(n))}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(pending)} of {len(node_ids)} proxies not synced after {timeout:.0f} s "
                f"(e.g. {sorted(pending)[0]})"
            )
        await asyncio.sleep(poll)


class ClientProcess:
    """The child process running the simulated proxies."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, target: str, node_ids: list[str], channels: int, delta: bool = False
    ) -> ClientProcess:
        root = str(Path(__file__).resolve().parent.parent)
        # Appended, so a PYTHONPATH given to the benchmark (another checkout) wins.
        paths = [p for p in (os.environ.get("PYTHONPATH", ""), root) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.simclients",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        client = cls(proc)
        setup = {"target": target, "node_ids": node_ids, "channels": channels, "delta": delta}
        await client.send(json.dumps(setup))
        if (line := await client.readline()) != "ready":
            raise RuntimeError(f"client process did not start: {line!r}")
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


def changed_spec(spec: MeshSpec, change: str) -> MeshSpec:
    if change == "endpoint":
        return dataclasses.replace(spec, extra_endpoints=spec.extra_endpoints + 1)
    if change == "port":
        return dataclasses.replace(spec, port_shift=spec.port_shift + 1000)
    if change == "weight":
        if not spec.subsets:
            raise ValueError("a weight change needs subsets (--subsets 2)")
        return dataclasses.replace(spec, weight_shift=spec.weight_shift + 5)
    raise ValueError(f"unknown change {change!r}; expected one of {', '.join(CHANGES)}")


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def _delta(after: Mapping[str, Any], before: Mapping[str, Any], key: str) -> Any:
    if isinstance(after[key], dict):
        return {k: v - before[key].get(k, 0) for k, v in after[key].items()}
    return after[key] - before[key]


async def run_fanout(
    spec: MeshSpec,
    proxies: int,
    change: str = "endpoint",
    timeout: float = 600.0,
    delta: bool = False,
    changes: int = 1,
) -> dict[str, dict[str, Any]]:
    """Cold start of ``proxies`` streams, then one change pushed to all of
    them, then ``changes - 1`` more (back and forth) for p50/p99 of "YAML
    text in -> every proxy SYNCED". Returns ``{"fanout": ..., "rss": ...}``."""
    node_ids = proxy_ids(spec, proxies)
    mesh = load_mesh(spec)
    new_mesh = load_mesh(changed_spec(spec, change))
    texts = [generate_texts(spec), generate_texts(changed_spec(spec, change))]
    cache, registry = SnapshotCache(), StatusRegistry()
    controller = CountingController(cache)
    controller.apply(mesh)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ads = AdsServer(cache, controller, registry)
    server.add_generic_rpc_handlers([ads.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rss_before = rss_metrics()
    channels = max(1, math.ceil(proxies / STREAMS_PER_CHANNEL))
    clients = await ClientProcess.start(f"127.0.0.1:{port}", node_ids, channels, delta)
    try:
        cpu, start = time.process_time(), time.perf_counter()
        await clients.send("go")
        await wait_synced(cache, registry, node_ids, timeout)
        cold_ms = (time.perf_counter() - start) * 1000
        cold_cpu = time.process_time() - cpu
        cold_pushes, cold_bytes = controller.pushes, controller.bytes_sent
        cold_stats = await clients.stats()

        with count_encodings() as encoded:
            cpu, start = time.process_time(), time.perf_counter()
            changed = controller.apply(new_mesh)
            apply_ms = (time.perf_counter() - start) * 1000
        await wait_synced(cache, registry, node_ids, timeout)
        push_ms = (time.perf_counter() - start) * 1000
        push_cpu = time.process_time() - cpu
        apply_mode = controller.last_apply
        push_pushes, push_bytes = controller.pushes, controller.bytes_sent
        rss = rss_metrics()
        push_stats = await clients.stats()
        # Repeated changes, back and forth: parse + translate + push until all SYNCED.
        converge, applies = [push_ms], [apply_ms]
        for i in range(1, changes):
            start = time.perf_counter()
            loaded = load_texts(texts[(i + 1) % 2]).mesh
            assert loaded is not None
            controller.apply(loaded)
            applies.append((time.perf_counter() - start) * 1000)
            await wait_synced(cache, registry, node_ids, timeout)
            converge.append((time.perf_counter() - start) * 1000)
        final = await clients.stop()
    finally:
        await clients.close()
        await server.stop(grace=None)
    delivered = _delta(push_stats, cold_stats, "resources_by_type")
    return {
        "fanout": {
            "proxies": proxies,
            "channels": channels,
            "change": change,
            "protocol": "delta" if delta else "sotw",
            "push_apply_mode": apply_mode,
            "changes": len(converge),
            "change_to_synced_p50_ms": _percentile(converge, 50),
            "change_to_synced_p99_ms": _percentile(converge, 99),
            "change_load_apply_p50_ms": _percentile(applies[1:] or applies, 50),
            "throttle_peak_waiting": ads.throttle.peak_waiting,
            "client_errors": final["errors"],
            "client_first_error": final["first_error"],
            "cold_sync_ms": cold_ms,
            "cold_server_cpu_s": cold_cpu,
            "cold_client_cpu_s": cold_stats["cpu_s"],
            "cold_responses": cold_pushes,
            "cold_bytes_sent": cold_bytes,
            "push_apply_ms": apply_ms,
            "push_ms": push_ms,
            "push_server_cpu_s": push_cpu,
            "push_client_cpu_s": _delta(push_stats, cold_stats, "cpu_s"),
            "push_proxies_changed": changed,
            "push_responses": push_pushes - cold_pushes,
            "push_bytes_sent": push_bytes - cold_bytes,
            "push_bytes_per_proxy": (push_bytes - cold_bytes) / proxies,
            "push_encode_calls": encoded.calls,
            "push_resources_encoded": encoded.resources,
            "push_resources_delivered": sum(delivered.values()),
            "push_encoded_by_type": dict(sorted(encoded.by_type.items())),
            "push_delivered_by_type": dict(sorted(delivered.items())),
        },
        "rss": {
            "before_clients_mb": rss_before["current_mb"],
            "after_push_mb": rss["current_mb"],
            "peak_mb": rss["peak_mb"],
            "per_proxy_kb": (rss["current_mb"] - rss_before["current_mb"]) * 1024 / proxies,
        },
    }
