"""The floor: what gRPC alone costs for a push's traffic, with none of sailplane.

``python -m benchmarks.floor [--streams N] [--response BYTES] [--answer BYTES]``

A bare ``grpc.aio`` server, with sailplane's server options, holds ``streams``
ADS-named streams from simulated clients in another process (10 to an HTTP/2
connection, as in :mod:`benchmarks.fanout`). Each round it writes one
``response``-byte message to every stream, and every client answers it with
an ``answer``-byte message; a round ends when the server has read every
answer. Nothing is parsed, translated or looked up, so a round's time and
the server's CPU for it are what one Python process serving gRPC cannot go
below for the same bytes on this machine.

The defaults are the SotW endpoint change of ``python -m benchmarks`` (1,000
services x 2 subsets, 2,000 proxies): a 450-byte EDS response, and an ACK
that repeats all 3,000 EDS names (150 KB). ``--response 650000 --answer 200``
is its weight change (each proxy's route table, a short ACK).

The client side (``python -m benchmarks.floor client``) speaks the line
protocol of :class:`benchmarks.fanout.ClientProcess`: a JSON setup line,
``ready``, then ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any

import grpc

from benchmarks.fanout import STREAMS_PER_CONNECTION, ClientProcess, percentile
from benchmarks.report import rss_metrics
from benchmarks.simclients import CHANNEL_OPTIONS, read_command, say
from sailplane.server.plane import SERVER_OPTIONS

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD = "StreamAggregatedResources"


class FloorServer:
    """Every stream waits for a round, writes the response, and counts the
    answers its reader reads."""

    def __init__(self, streams: int, response: bytes) -> None:
        self.response = response
        self.expected = streams
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.wakes: list[asyncio.Event] = []
        self.unanswered = 0
        self.answers = 0  # read, in all
        self.round_over: asyncio.Future[None] | None = None

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(self.stream)}
        )

    async def stream(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.read()  # the client's first request
        wake = asyncio.Event()
        self.wakes.append(wake)
        if len(self.wakes) == self.expected:
            self.connected.set_result(None)
        reader = asyncio.create_task(self.read_answers(context))
        try:
            while True:
                await wake.wait()
                wake.clear()
                await context.write(self.response)
        finally:
            reader.cancel()

    async def read_answers(self, context: grpc.aio.ServicerContext) -> None:
        while await context.read() is not grpc.aio.EOF:
            self.answers += 1
            self.unanswered -= 1
            if self.unanswered == 0 and self.round_over is not None:
                self.round_over.set_result(None)

    async def push(self) -> None:
        """One round: every stream writes, every client answers."""
        self.unanswered = len(self.wakes)
        self.round_over = asyncio.get_running_loop().create_future()
        for wake in self.wakes:
            wake.set()
        await self.round_over


async def run_floor(
    streams: int,
    response: int,
    answer: int,
    rounds: int,
    per_connection: int = STREAMS_PER_CONNECTION,
) -> dict[str, Any]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    floor = FloorServer(streams, b"r" * response)
    server.add_generic_rpc_handlers([floor.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channels = max(1, math.ceil(streams / per_connection))
    setup = {"target": f"127.0.0.1:{port}", "streams": streams, "channels": channels}
    clients = None
    try:
        clients = await ClientProcess.spawn(
            "benchmarks.floor", {**setup, "answer": answer}, "client"
        )
        await asyncio.wait_for(floor.connected, 120)
        await asyncio.sleep(1.0)  # connections settle
        times, cpus = [], []
        for _ in range(rounds):
            cpu, start = time.process_time(), time.perf_counter()
            await asyncio.wait_for(floor.push(), 120)
            times.append((time.perf_counter() - start) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
            await asyncio.sleep(0.1)
        await clients.send("stop")
    finally:
        if clients is not None:
            await clients.close()
        await server.stop(0)
    return {
        "streams": streams,
        "response_bytes": response,
        "answer_bytes": answer,
        "rounds": len(times),
        "answers_read": floor.answers,
        "round_p50_ms": percentile(times, 50),
        "round_p99_ms": percentile(times, 99),
        "server_cpu_ms_p50": percentile(cpus, 50),
        "peak_rss_mb": rss_metrics()["peak_mb"],
    }


# -- the clients (python -m benchmarks.floor client) ---------------------------


async def run_clients(target: str, streams: int, channel_count: int, answer: bytes) -> None:
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(channel_count)
    ]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))

    async def one(channel: grpc.aio.Channel) -> None:
        call: Any = channel.stream_stream(
            f"/{SERVICE}/{METHOD}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )()
        await call.write(b"")
        while await call.read() is not grpc.aio.EOF:
            await call.write(answer)

    tasks = [asyncio.create_task(one(channels[i % channel_count])) for i in range(streams)]
    say("ready")
    await read_command()  # stop
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()


async def _client_main() -> None:
    setup = json.loads(await read_command())
    await run_clients(setup["target"], setup["streams"], setup["channels"], b"a" * setup["answer"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--response", type=int, default=450, help="bytes per response")
    parser.add_argument("--answer", type=int, default=150_000, help="bytes per answer")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    result = asyncio.run(run_floor(args.streams, args.response, args.answer, args.rounds))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        asyncio.run(_client_main())
    else:
        sys.exit(main())
