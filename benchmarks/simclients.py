"""The simulated proxies: many :meth:`AdsClient.follow` streams in one process.

Run as ``python -m benchmarks.simclients`` by :mod:`benchmarks.fanout`, so the
clients' CPU is not counted as the control plane's. A line protocol on
stdin/stdout keeps the parent in charge of timing:

* parent -> child: one JSON line ``{"target", "node_ids", "channels", "delta"}``
* child -> parent: ``ready`` once every channel is connected
* parent -> child: ``go`` (open every stream)
* parent -> child: ``stats``; child -> parent: one JSON line of cumulative
  statistics (asked after each phase, so the parent can take differences)
* parent -> child: ``stop``; child -> parent: final statistics, then exit
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from sailplane.xds.client import AdsClient
from sailplane.xds.delta_client import DeltaAdsClient
from sailplane.xds.types import SHORT_NAMES

CHANNEL_OPTIONS = [
    # Separate channels must be separate TCP connections, not one shared subchannel.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", -1),
]


@dataclass
class ClientStats:
    streams: int = 0
    errors: int = 0
    responses: int = 0
    resources: int = 0
    resources_by_type: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    cpu_s: float = 0.0
    first_error: str = ""


async def _readline() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(
    target: str, node_ids: list[str], channel_count: int, delta: bool = False
) -> ClientStats:
    stats = ClientStats(streams=len(node_ids))
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(channel_count)
    ]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    client_type = DeltaAdsClient if delta else AdsClient
    clients = [
        client_type(target, node_id, channel=channels[i % channel_count])
        for i, node_id in enumerate(node_ids)
    ]

    def on_response(client: object, response: discovery_pb2.DiscoveryResponse) -> None:
        count = len(response.resources)
        short = SHORT_NAMES.get(response.type_url, response.type_url)
        stats.resources += count
        stats.resources_by_type[short] = stats.resources_by_type.get(short, 0) + count

    _say("ready")
    if await _readline() != "go":
        raise SystemExit("expected 'go'")
    cpu0 = time.process_time()
    stop = asyncio.Event()
    tasks = []
    for client in clients:
        client.open()
        tasks.append(asyncio.create_task(client.follow(stop, on_response)))
    while (command := await _readline()) == "stats":
        _tally(stats, clients, tasks, cpu0)
        _say(json.dumps(asdict(stats)))
    if command != "stop":
        raise SystemExit(f"expected 'stats' or 'stop', got {command!r}")
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    _tally(stats, clients, tasks, cpu0)
    for client in clients:
        await client.close()
    for channel in channels:
        await channel.close()
    return stats


def _tally(
    stats: ClientStats,
    clients: list[AdsClient | DeltaAdsClient],
    tasks: list[asyncio.Task[None]],
    cpu0: float,
) -> None:
    stats.cpu_s = time.process_time() - cpu0
    stats.responses = sum(c.responses for c in clients)
    stats.bytes_received = sum(c.bytes_received for c in clients)
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    stats.errors = len(failed)
    if failed:
        stats.first_error = repr(failed[0].exception())


async def _main() -> None:
    setup = json.loads(await _readline())
    stats = await run(
        setup["target"], setup["node_ids"], setup["channels"], setup.get("delta", False)
    )
    _say(json.dumps(asdict(stats)))


if __name__ == "__main__":
    asyncio.run(_main())
