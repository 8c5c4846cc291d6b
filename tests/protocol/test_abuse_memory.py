"""Huge requests leave nothing behind (issue #14): 40 streams whose first
request names 1.4 million resources (~15 MB, just under the gRPC receive
limit), from a node the mesh knows and from one it refuses, against a real
``sailplane serve``.

Measured: the RSS of that process (``/proc/PID/status``), the process users
run, with its own allocator and gRPC threads: an in-process server would
share its heap with the test's clients, whose 15 MB requests would blur the
figure. The requests carry different names each, so no sharing between
them can hide what one of them costs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from sailplane.server.plane import SERVER_OPTIONS
from sailplane.xds import ENDPOINT
from sailplane.xds.server.limits import StreamLimits
from sailplane.xds.wire import varint
from tests.support.mesh import Mesh, service

STREAMS = 40
NAMES = 1_400_000
WAVE = 10  # streams at once (the test's own memory: 10 requests of 15 MB)
_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def _field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def _names_block() -> bytes:
    """1.4 M ``resource_names`` fields, each ``@@<7 digits>``; ``@@`` is
    replaced per stream, so every request names different resources."""
    return b"".join(_field(3, b"@@%07d" % i) for i in range(NAMES))


def _request(block: bytes, node_id: str, tag: int) -> bytes:
    node = _field(2, _field(1, node_id.encode()))
    return node + block.replace(b"@@", b"%02d" % tag) + _field(4, ENDPOINT.encode())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _one(target: str, raw: bytes) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(
            _METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )()
        try:
            await call.write(raw)
            await asyncio.wait_for(call.read(), 30)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            call.cancel()
        return grpc.StatusCode.OK


async def _streams(target: str, block: bytes, node_ids: list[str]) -> set[grpc.StatusCode]:
    codes = set()
    for start in range(0, len(node_ids), WAVE):
        wave = node_ids[start : start + WAVE]
        requests = [_request(block, node, start + i) for i, node in enumerate(wave)]
        codes |= set(await asyncio.gather(*(_one(target, raw) for raw in requests)))
        del requests
    return codes


def _settled_rss(pid: int) -> float:
    """After the streams' ends are handled and the heap trimmed (a second
    after a burst of large requests, see xds/memory.py)."""
    time.sleep(2.5)
    return _rss_mb(pid)


async def test_huge_first_requests_leave_nothing_behind(mesh: Mesh) -> None:
    receive_limit = dict(SERVER_OPTIONS)["grpc.max_receive_message_length"]
    block = _names_block()
    assert len(_request(block, "x" * 30, 0)) < receive_limit  # gRPC lets them in
    assert StreamLimits().names < NAMES  # more than a stream may subscribe

    known = [mesh.workload(f"w{i}", {"app": "svc"}) for i in range(5)]
    mesh.write_registry([service("svc")])
    mesh.start_control_plane()
    assert mesh.plane is not None
    pid, target = mesh.plane.popen.pid, f"127.0.0.1:{mesh.xds_port}"
    start = _settled_rss(pid)

    # Known nodes (8 streams each at most): admitted, then refused for the names.
    valid = await _streams(target, block, [known[i % 5].id for i in range(STREAMS)])
    assert valid == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    after_valid = _settled_rss(pid)

    refused = await _streams(target, block, [f"ghost-{i}.default" for i in range(STREAMS)])
    assert refused == {grpc.StatusCode.PERMISSION_DENIED}
    after_refused = _settled_rss(pid)

    print(
        f"sailplane serve RSS: {start:.0f} MB at start, {after_valid:.0f} MB after known "
        f"nodes' streams, {after_refused:.0f} MB after refused nodes' streams"
    )
    assert after_valid - start < 300
    assert after_refused - start < 300
    assert mesh.plane.alive()
