"""The clients of the abuse scenario (:mod:`benchmarks.abuse`), in a process
of their own: one responsive proxy, and many streams that never answer.

* the *proxy* behaves as Envoy does (:class:`~benchmarks.simclients.SimulatedProxy`:
  wildcard CDS and LDS, EDS and RDS by name, every response ACKed) and notes
  when each response arrived (``time.monotonic()``, which on Linux is one
  clock for every process of the machine, so the parent can subtract);
* each *abuser* subscribes as Envoy does (CDS, LDS, then RDS by the names
  the listeners use), reads every response, and never ACKs or NACKs one.

Line protocol on stdin/stdout (the parent is in charge of timing):

* parent -> child: one JSON line ``{"target", "proxy", "abusers", "channels"}``
* child -> parent: ``ready`` once every channel is connected
* ``proxy``: open the responsive proxy's stream; ``ok``
* ``attack``: open every abuser's stream; ``ok``
* ``received TYPE_URL VERSION``: when the proxy has received that response
  (waits for it); one JSON line ``{"at", "size"}`` (``at`` null: not within 60 s)
* ``stats``: one JSON line: abusers open, abusers that got a response of
  64 KiB or more, bytes they received, errors
* ``stop``: the same statistics, then exit
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc

from benchmarks.simclients import (
    CHANNEL_OPTIONS,
    ClientStats,
    Envelope,
    SimulatedProxy,
    read_command,
    say,
    sotw_dependents,
)
from sailplane.xds.types import LISTENER, ROUTE

LARGE = 64 * 1024


class TimedProxy(SimulatedProxy):
    """A responsive proxy that notes when each (type, version) arrived."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, stats: ClientStats) -> None:
        super().__init__(channel, node_id, stats)
        self.received: dict[tuple[str, str], tuple[float, int]] = {}

    async def on_response(self, raw: bytes) -> None:
        at = time.monotonic()
        envelope: Any = Envelope.FromString(raw)
        self.received.setdefault((envelope.type_url, envelope.version), (at, len(raw)))
        await super().on_response(raw)


class Abuser(SimulatedProxy):
    """Subscribes as Envoy does; reads every response; answers none."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, stats: ClientStats) -> None:
        super().__init__(channel, node_id, stats)
        self.largest = 0

    async def on_response(self, raw: bytes) -> None:
        envelope: Any = Envelope.FromString(raw)
        self.stats.count(envelope.type_url, len(raw))
        self.largest = max(self.largest, len(raw))
        if envelope.type_url == LISTENER and ROUTE not in self.names:
            # A subscription, not an ACK: no version, no nonce.
            self.names[ROUTE] = sotw_dependents(LISTENER, envelope.version, raw)
            await self.call.write(self.request(ROUTE))


def _stats(abusers: list[Abuser], tasks: list[asyncio.Task[None]]) -> dict[str, Any]:
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    return {
        "abusers": len(abusers),
        "open": sum(not t.done() for t in tasks),
        "took_large_response": sum(a.largest >= LARGE for a in abusers),
        "bytes_received": abusers[0].stats.bytes_received if abusers else 0,
        "errors": len(failed),
        "first_error": repr(failed[0].exception()) if failed else "",
    }


async def _received(proxy: TimedProxy, type_url: str, version: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (found := proxy.received.get((type_url, version))) is None:
        if time.monotonic() > deadline:
            return {"at": None, "size": 0}
        await asyncio.sleep(0.001)
    return {"at": found[0], "size": found[1]}


async def run(setup: dict[str, Any]) -> None:
    count = max(1, setup["channels"])
    channels = [
        grpc.aio.insecure_channel(setup["target"], options=CHANNEL_OPTIONS) for _ in range(count)
    ]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    stats = ClientStats()
    # The proxy has a connection of its own; the abusers share the others.
    spread = channels[1:] or channels
    proxy: TimedProxy | None = None
    abusers: list[Abuser] = []
    tasks: list[asyncio.Task[None]] = []
    say("ready")
    try:
        while (command := await read_command()) not in ("stop", ""):
            if command == "proxy":
                proxy = TimedProxy(channels[0], setup["proxy"], ClientStats())
                tasks.append(asyncio.create_task(proxy.run()))
                say("ok")
            elif command == "attack":
                abusers = [
                    Abuser(spread[i % len(spread)], node, stats)
                    for i, node in enumerate(setup["abusers"])
                ]
                tasks.extend(asyncio.create_task(a.run()) for a in abusers)
                say("ok")
            elif command.startswith("received ") and proxy is not None:
                _, type_url, version = command.split(" ", 2)
                say(json.dumps(await _received(proxy, type_url, version)))
            elif command == "stats":
                say(json.dumps(_stats(abusers, tasks[1:])))
            else:
                raise SystemExit(f"unknown command {command!r}")
        say(json.dumps(_stats(abusers, tasks[1:])))
    finally:
        for client in [*abusers, *([proxy] if proxy else [])]:
            client.call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()


async def _main() -> None:
    await run(json.loads(await read_command()))


if __name__ == "__main__":
    asyncio.run(_main())
