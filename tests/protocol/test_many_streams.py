"""Many concurrent streams, each following like Envoy, all converge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from sailplane.xds import AdsServer, Snapshot, SnapshotCache
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import SERVICES, all_synced_at, eventually, mesh_snapshot

STREAMS = 200
CHANNELS = 10  # several HTTP/2 connections, many streams on each


def mesh_v1() -> Snapshot:
    return mesh_snapshot(
        {**SERVICES, "reviews": ["10.0.2.1"]},
        {"5000": ["frontend", "backend", "reviews"], "9080": ["reviews"]},
        {5000: "5000", 9080: "9080"},
    )


def mesh_v2() -> Snapshot:
    """reviews goes (a make-before-break removal on every stream); backend moves."""
    return mesh_snapshot(
        {**SERVICES, "backend": ["10.0.1.5", "10.0.1.6"]},
        {"5000": ["frontend", "backend"]},
        {5000: "5000"},
    )


async def test_200_streams_converge_and_reconverge(
    cache: SnapshotCache,
    ads: AdsServer,
    target: str,
    connect: Callable[..., AdsClient],
) -> None:
    started = time.monotonic()
    nodes = [f"sidecar-{i:03d}.default" for i in range(STREAMS)]
    v1 = mesh_v1()
    for node in nodes:
        cache.set(node, v1)
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    stop = asyncio.Event()
    followers: list[asyncio.Task[None]] = []
    try:
        for i, node in enumerate(nodes):
            client = connect(node, channel=channels[i % CHANNELS])
            followers.append(asyncio.create_task(client.follow(stop)))

        def all_synced(snapshot: Snapshot) -> Callable[[], bool]:
            def check() -> bool:
                for task in followers:
                    if task.done():
                        task.result()  # a follower that died fails the test with its error
                return all_synced_at(ads, nodes, snapshot)

            return check

        await eventually(all_synced(v1), timeout=10, what=f"{STREAMS} streams SYNCED at v1")
        assert len(ads.status.to_json()) == STREAMS

        v2 = mesh_v2()
        assert all(cache.set(node, v2) for node in nodes)
        await eventually(all_synced(v2), timeout=10, what=f"{STREAMS} streams SYNCED at v2")
        assert all(
            stream["types"][short]["error"] is None
            for stream in ads.status.to_json()
            for short in stream["types"]
        )
    finally:
        stop.set()
        await asyncio.gather(*followers, return_exceptions=True)
        for channel in channels:
            await channel.close()
    assert time.monotonic() - started < 15
