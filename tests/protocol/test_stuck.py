"""Push scheduling: a stream that stops reading or answering is closed after
a timeout, and it never holds the others back, even when the push throttle
has a single slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from sailplane.xds import CLUSTER, ENDPOINT, AdsServer, SnapshotCache
from sailplane.xds.client import AdsClient
from sailplane.xds.delta_client import DeltaAdsClient
from sailplane.xds.server.push import PushThrottle
from tests.protocol.conftest import (
    SERVICES,
    all_synced_at,
    build_snapshot,
    cluster_name,
    eventually,
    mesh_snapshot,
)

FOLLOWERS = 20


@contextlib.asynccontextmanager
async def following(
    clients: Sequence[AdsClient | DeltaAdsClient], lone: AdsClient | DeltaAdsClient
) -> AsyncIterator[None]:
    """``clients`` open their streams and ACK everything until the block
    ends; then they and ``lone`` (the misbehaving stream) are closed."""
    stop = asyncio.Event()
    tasks = []
    for client in clients:
        client.open()
        tasks.append(asyncio.create_task(client.follow(stop)))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in [lone, *clients]:
            await client.close()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_stuck_stream_is_closed_and_others_converge(
    cache: SnapshotCache,
    serve: Callable[[AdsServer], Awaitable[str]],
    delta: bool,
) -> None:
    throttle = PushThrottle(limit=1, small=0)  # the stuck stream could block everyone
    ads = AdsServer(cache, throttle=throttle, response_timeout=0.5, write_timeout=0.5)
    target = await serve(ads)
    nodes = [f"sidecar-{i:02d}.default" for i in range(FOLLOWERS)]
    stuck_node = "stuck.default"
    v1 = mesh_snapshot(SERVICES, {"5000": ["frontend", "backend"]}, {5000: "5000"})
    for node in [stuck_node, *nodes]:
        cache.set(node, v1)

    client_type = DeltaAdsClient if delta else AdsClient
    # Asks for clusters, then never reads or answers again.
    stuck = client_type(target, stuck_node)
    stuck.open()
    stuck.request(CLUSTER)
    await eventually(lambda: throttle.in_flight == 1, what="the stuck stream holds the slot")

    followers = [client_type(target, node) for node in nodes]
    async with following(followers, stuck):
        await eventually(
            lambda: all_synced_at(ads, nodes, v1), timeout=10, what="followers SYNCED at v1"
        )
        # The stuck stream was closed by the server, with a clean status.
        assert stuck_node not in {s["proxy"] for s in ads.status.to_json()}
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            while True:
                await stuck.recv(timeout=2)
        assert closed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        v2 = mesh_snapshot(
            {**SERVICES, "backend": ["10.0.1.7"]}, {"5000": ["frontend", "backend"]}, {5000: "5000"}
        )
        for node in nodes:
            cache.set(node, v2)
        await eventually(
            lambda: all_synced_at(ads, nodes, v2), timeout=10, what="followers SYNCED at v2"
        )
        assert throttle.peak_waiting >= 1  # the throttle did queue pushes


async def test_throttle_bounds_streams_in_flight(
    cache: SnapshotCache, serve: Callable[[AdsServer], Awaitable[str]]
) -> None:
    throttle = PushThrottle(limit=3, small=0)
    ads = AdsServer(cache, throttle=throttle)
    target = await serve(ads)
    nodes = [f"sidecar-{i:02d}.default" for i in range(30)]
    v1 = mesh_snapshot(SERVICES, {"5000": ["frontend", "backend"]}, {5000: "5000"})
    for node in nodes:
        cache.set(node, v1)
    peak = 0
    stop = asyncio.Event()
    channel = grpc.aio.insecure_channel(target)
    clients = [AdsClient(target, node, channel=channel) for node in nodes]

    def watch(client: AdsClient, response: object) -> None:
        nonlocal peak
        peak = max(peak, throttle.in_flight)

    tasks = []
    for client in clients:
        client.open()
        tasks.append(asyncio.create_task(client.follow(stop, watch)))
    try:
        await eventually(lambda: all_synced_at(ads, nodes, v1), timeout=10, what="all SYNCED")
        assert 1 <= peak <= 3
        assert throttle.in_flight == 0  # every slot is given back once answered
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
        await channel.close()


async def test_slow_stream_gives_up_its_slot_without_being_closed(
    cache: SnapshotCache, serve: Callable[[AdsServer], Awaitable[str]]
) -> None:
    throttle = PushThrottle(limit=1, small=0)
    ads = AdsServer(cache, throttle=throttle, response_timeout=60, slot_timeout=0.3)
    target = await serve(ads)
    v1 = mesh_snapshot(SERVICES, {"5000": ["frontend", "backend"]}, {5000: "5000"})
    nodes = [f"sidecar-{i:02d}.default" for i in range(5)]
    for node in ["slow.default", *nodes]:
        cache.set(node, v1)
    slow = AdsClient(target, "slow.default")
    slow.open()
    slow.request(CLUSTER)  # answered much later
    await eventually(lambda: throttle.in_flight == 1)
    followers = [AdsClient(target, node) for node in nodes]
    async with following(followers, slow):
        await eventually(lambda: all_synced_at(ads, nodes, v1), what="others SYNCED")
        assert "slow.default" in {s["proxy"] for s in ads.status.to_json()}  # still open
        slow.ack(await slow.recv())
        await eventually(lambda: ads.status.to_json()[0]["types"]["clusters"]["state"] == "SYNCED")


async def test_small_responses_do_not_wait_for_a_slot(
    cache: SnapshotCache, serve: Callable[[AdsServer], Awaitable[str]]
) -> None:
    """The only slot is held by a stream that never answers its large
    response; streams whose responses are small converge regardless."""
    big = mesh_snapshot(
        {f"svc-{i:03d}": ["10.0.0.1"] for i in range(400)},
        {"5000": [f"svc-{i:03d}" for i in range(400)]},
        {5000: "5000"},
    )
    small = mesh_snapshot(SERVICES, {"5000": ["frontend", "backend"]}, {5000: "5000"})
    throttle = PushThrottle(limit=1, small=8 * 1024)
    assert len(big.get(CLUSTER).joined) > throttle.small > len(small.get(CLUSTER).joined)
    ads = AdsServer(cache, throttle=throttle, response_timeout=60, slot_timeout=60)
    target = await serve(ads)
    nodes = [f"sidecar-{i:02d}.default" for i in range(10)]
    cache.set("hog.default", big)
    for node in nodes:
        cache.set(node, small)
    hog = AdsClient(target, "hog.default")
    hog.open()
    hog.request(CLUSTER)  # never answered
    await eventually(lambda: throttle.in_flight == 1, what="the hog holds the only slot")
    followers = [AdsClient(target, node) for node in nodes]
    async with following(followers, hog):
        await eventually(lambda: all_synced_at(ads, nodes, small), what="small streams SYNCED")
        assert throttle.in_flight == 1  # still the hog's
        assert throttle.peak_waiting == 0  # nobody queued behind it


async def test_a_write_the_client_never_reads_is_given_up_and_frees_the_slot(
    cache: SnapshotCache, serve: Callable[[AdsServer], Awaitable[str]]
) -> None:
    """A response far larger than HTTP/2 flow control lets through, to a
    client that never reads: the write blocks; after write_timeout the server
    gives the stream up (its status, its slot), and the others converge."""
    huge = build_snapshot(
        clusters=[
            cluster_pb2.Cluster(name=f"big-{i}", alt_stat_name="x" * 1_000_000) for i in range(16)
        ]
    )
    small = mesh_snapshot(SERVICES, {"5000": ["frontend", "backend"]}, {5000: "5000"})
    throttle = PushThrottle(limit=1, small=0)
    ads = AdsServer(cache, throttle=throttle, write_timeout=0.5, response_timeout=60)
    target = await serve(ads)
    cache.set("deaf.default", huge)
    nodes = [f"sidecar-{i:02d}.default" for i in range(5)]
    for node in nodes:
        cache.set(node, small)
    deaf = AdsClient(target, "deaf.default")
    deaf.open()
    deaf.request(CLUSTER)  # and never reads
    await eventually(lambda: throttle.in_flight == 1, what="the deaf stream holds the slot")
    followers = [AdsClient(target, node) for node in nodes]
    async with following(followers, deaf):
        await eventually(lambda: all_synced_at(ads, nodes, small), what="the others SYNCED")
        assert "deaf.default" not in {s["proxy"] for s in ads.status.to_json()}
        assert throttle.peak_waiting >= 1  # they did wait for the deaf stream's slot


async def test_a_small_response_with_a_large_answer_waits_for_a_slot_of_answers(
    cache: SnapshotCache, serve: Callable[[AdsServer], Awaitable[str]]
) -> None:
    """A SotW request repeats the whole subscription, so the ACK of a small
    EDS response to a stream subscribed to many clusters is large. Such
    pushes take a slot of the throttle's answers: with one slot, a second
    such stream is sent nothing until the first has answered. A stream
    whose answer will be small is served meanwhile."""
    snapshot = mesh_snapshot(SERVICES, {"5000": ["frontend"]}, {5000: "5000"})
    throttle = PushThrottle(limit=1, small=4 * 1024, answer_share=1)
    answers = throttle.answers
    assert answers is not None
    ads = AdsServer(cache, throttle=throttle, response_timeout=60, slot_timeout=60)
    target = await serve(ads)
    # One name that exists, and 200 that do not: a response of one
    # assignment, and requests of ~10 KB.
    many = [cluster_name("frontend"), *(cluster_name(f"gone-{i:03d}") for i in range(200))]
    first, second, light = (AdsClient(target, f"{n}.default") for n in ("a", "b", "c"))
    for client in (first, second, light):
        cache.set(client.node_id, snapshot)
    try:
        first.open()
        first.request(ENDPOINT, many)
        held = await first.recv()
        assert len(held.SerializeToString()) < throttle.small  # the response is small
        assert (answers.in_flight, throttle.in_flight) == (1, 0)
        second.open()
        second.request(ENDPOINT, many)
        await second.expect_silence(0.3)  # queued behind the first one's answer
        assert answers.waiting == 1
        light.open()
        light.request(ENDPOINT, [cluster_name("frontend")])
        assert len((await light.recv()).resources) == 1  # no slot needed
        first.ack(held, many)
        assert len((await second.recv()).resources) == 1
        assert (answers.in_flight, answers.waiting) == (1, 0)  # now the second one's
    finally:
        for client in (first, second, light):
            await client.close()


async def test_a_stream_that_never_answers_gives_its_slot_of_answers_up(
    cache: SnapshotCache, serve: Callable[[AdsServer], Awaitable[str]]
) -> None:
    """The lie: a client takes a small response whose answer would be large,
    and never answers. It holds the only slot of answers for the unproven
    slot timeout, no longer: then the next stream is served."""
    snapshot = mesh_snapshot(SERVICES, {"5000": ["frontend"]}, {5000: "5000"})
    throttle = PushThrottle(limit=1, small=4 * 1024, answer_share=1)
    answers = throttle.answers
    assert answers is not None
    ads = AdsServer(
        cache, throttle=throttle, response_timeout=60, slot_timeout=60, unproven_slot_timeout=0.3
    )
    target = await serve(ads)
    many = [cluster_name("frontend"), *(cluster_name(f"gone-{i:03d}") for i in range(200))]
    deaf, next_one = (AdsClient(target, f"{n}.default") for n in ("deaf", "next"))
    for client in (deaf, next_one):
        cache.set(client.node_id, snapshot)
    try:
        deaf.open()
        deaf.request(ENDPOINT, many)
        await deaf.recv()  # and never answered
        next_one.open()
        next_one.request(ENDPOINT, many)
        assert len((await next_one.recv(timeout=5)).resources) == 1
        assert answers.timed_out == {True: 0, False: 1}  # the deaf stream's slot
    finally:
        for client in (deaf, next_one):
            await client.close()
