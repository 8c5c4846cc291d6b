"""The simulated proxies: many ADS streams in one process, behaving like Envoy.

Run as ``python -m benchmarks.simclients`` by :mod:`benchmarks.fanout`, so the
clients' CPU is not counted as the control plane's. A line protocol on
stdin/stdout keeps the parent in charge of timing:

* parent -> child: one JSON line ``{"target", "node_ids", "channels", "delta"}``
* child -> parent: ``ready`` once every channel is connected
* parent -> child: ``go`` (open every stream)
* parent -> child: ``stats``; child -> parent: one JSON line of cumulative
  statistics (asked after each phase, so the parent can take differences)
* parent -> child: ``stop``; child -> parent: final statistics, then exit

Each proxy is a real gRPC stream speaking the real protocol as Envoy does:
wildcard CDS and LDS; EDS for every EDS cluster and RDS for every route
name the listeners use, re-subscribed as they change; every response ACKed
with its version and nonce (state of the world) or its nonce (delta). Delta
ones speak VHDS as Envoy 1.40 does: after the first route config with
``vhds``, one empty VirtualHost request per stream; the virtual hosts the
server pushes unasked are ACKed like everything else.

What it does not do is parse every resource of every response: two cores
shared with the control plane cannot afford to decode 2,000 copies of a
6,000-cluster table, and Envoy would do that work on its own cores. A
response's envelope (version, type, nonce) is read without touching the
resources; what a cluster or listener table implies (the EDS or RDS names to
subscribe) is derived once per distinct content and shared. "Distinct
content" is keyed by the type and version the control plane gives it:
sailplane's versions are hashes of the content, so equal versions are equal
tables. The protocol tests use the careful clients in sailplane/xds instead.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from sailplane.xds.client import _eds_name, _rds_names
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT_NAMES, VIRTUAL_HOST
from sailplane.xds.wire import varint

_SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
CHANNEL_OPTIONS = [
    # Separate channels must be separate TCP connections, not one shared subchannel.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", -1),
]
_DEPENDENT = {CLUSTER: ENDPOINT, LISTENER: ROUTE}


def _envelope_type() -> type[Message]:
    """A message with only fields 1, 4 and 5 as strings: version (or system
    version), type URL and nonce, in both DiscoveryResponse and
    DeltaDiscoveryResponse. Parsing a response as this skips its resources
    in C (they stay unknown bytes), which is the point."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="sailplane_bench_envelope.proto", package="sailplane.bench", syntax="proto3"
    )
    message = proto.message_type.add(name="Envelope")
    for number, name in ((1, "version"), (4, "type_url"), (5, "nonce")):
        message.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    envelope: type[Any] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("sailplane.bench.Envelope")
    )
    return envelope


Envelope = _envelope_type()


def _string_field(number: int, value: str) -> bytes:
    encoded = value.encode()
    return varint(number << 3 | 2) + varint(len(encoded)) + encoded if encoded else b""


# -- what a table implies, derived once per content ---------------------------

# (type, version) -> names of the dependent type, for state-of-the-world tables.
_SOTW_DEPENDENTS: dict[tuple[str, str], tuple[str, ...]] = {}
# (type, version before, version after) -> (names held after, dependent names).
_DELTA_DEPENDENTS: dict[tuple[str, str, str], tuple[frozenset[str], tuple[str, ...]]] = {}
# name -> value bytes of every cluster / listener seen (delta: held tables).
_DELTA_VALUES: dict[str, dict[str, bytes]] = {CLUSTER: {}, LISTENER: {}}
# route responses' version -> whether one of its route configs uses VHDS.
_VHDS_ROUTES: dict[str, bool] = {}


def uses_vhds(version: str, raw: bytes) -> bool:
    found = _VHDS_ROUTES.get(version)
    if found is None:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        found = _VHDS_ROUTES[version] = any(
            route_pb2.RouteConfiguration.FromString(r.resource.value).HasField("vhds")
            for r in response.resources
        )
    return found


def _dependents_of(type_url: str, values: Iterable[bytes]) -> tuple[str, ...]:
    if type_url == CLUSTER:
        return tuple(sorted({n for v in values if (n := _eds_name(v)) is not None}))
    return tuple(sorted({n for v in values for n in _rds_names(v)}))


def sotw_dependents(type_url: str, version: str, raw: bytes) -> tuple[str, ...]:
    key = (type_url, version)
    found = _SOTW_DEPENDENTS.get(key)
    if found is None:
        response = discovery_pb2.DiscoveryResponse.FromString(raw)
        found = _SOTW_DEPENDENTS[key] = _dependents_of(
            type_url, (r.value for r in response.resources)
        )
    return found


def delta_dependents(
    type_url: str, before: str, after: str, held: frozenset[str], raw: bytes
) -> tuple[frozenset[str], tuple[str, ...]]:
    key = (type_url, before, after)
    found = _DELTA_DEPENDENTS.get(key)
    if found is None:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        values = _DELTA_VALUES[type_url]
        names = set(held)
        for resource in response.resources:
            values[resource.name] = resource.resource.value
            names.add(resource.name)
        names.difference_update(response.removed_resources)
        now = frozenset(names)
        found = _DELTA_DEPENDENTS[key] = (now, _dependents_of(type_url, (values[n] for n in now)))
    return found


# -- statistics ---------------------------------------------------------------


@dataclass
class ClientStats:
    streams: int = 0
    errors: int = 0
    responses: int = 0
    responses_by_type: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    bytes_by_type: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    first_error: str = ""

    def count(self, type_url: str, size: int) -> None:
        short = SHORT_NAMES.get(type_url, type_url)
        self.responses += 1
        self.bytes_received += size
        self.responses_by_type[short] = self.responses_by_type.get(short, 0) + 1
        self.bytes_by_type[short] = self.bytes_by_type.get(short, 0) + size


# -- the proxies ----------------------------------------------------------------


class SimulatedProxy:
    """One Envoy-like ADS stream (state of the world)."""

    method = "StreamAggregatedResources"

    def __init__(self, channel: grpc.aio.Channel, node_id: str, stats: ClientStats) -> None:
        self.node_id = node_id
        self.stats = stats
        self.call: Any = channel.stream_stream(
            _SERVICE + self.method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )()
        self.names: dict[str, tuple[str, ...]] = {}
        self.versions: dict[str, str] = {}
        self.nonces: dict[str, str] = {}
        self._encoded_names: dict[str, tuple[tuple[str, ...], bytes]] = {}

    def node(self, field_number: int) -> bytes:
        """The Node field (only in a stream's first request)."""
        node = _string_field(1, self.node_id)  # Node.id
        return varint(field_number << 3 | 2) + varint(len(node)) + node

    async def run(self) -> None:
        await self.call.write(self.request(CLUSTER, first=True))
        await self.call.write(self.request(LISTENER))
        while True:
            raw = await self.call.read()
            if raw is grpc.aio.EOF:
                return
            await self.on_response(raw)

    def request(self, type_url: str, first: bool = False) -> bytes:
        """A DiscoveryRequest, fields in number order as Envoy writes them:
        version_info, node, resource_names, type_url, response_nonce."""
        names = self.names.get(type_url, ())
        found = self._encoded_names.get(type_url)
        if found is None or found[0] is not names:
            block = b"".join(_string_field(3, n) for n in names)
            found = self._encoded_names[type_url] = (names, block)
        return b"".join(
            [
                _string_field(1, self.versions.get(type_url, "")),
                self.node(2) if first else b"",
                found[1],
                _string_field(4, type_url),
                _string_field(5, self.nonces.get(type_url, "")),
            ]
        )

    async def on_response(self, raw: bytes) -> None:
        envelope: Any = Envelope.FromString(raw)
        type_url, version = envelope.type_url, envelope.version
        self.stats.count(type_url, len(raw))
        self.versions[type_url], self.nonces[type_url] = version, envelope.nonce
        dependent = _DEPENDENT.get(type_url)
        follow_up = None
        if dependent is not None:
            wanted = sotw_dependents(type_url, version, raw)
            if wanted != self.names.get(dependent, ()):
                self.names[dependent] = wanted
                follow_up = dependent
        await self.call.write(self.request(type_url))  # ACK
        if follow_up is not None:
            await self.call.write(self.request(follow_up))


class SimulatedDeltaProxy(SimulatedProxy):
    """One Envoy-like incremental ADS stream."""

    method = "DeltaAggregatedResources"

    def __init__(self, channel: grpc.aio.Channel, node_id: str, stats: ClientStats) -> None:
        super().__init__(channel, node_id, stats)
        self.held: dict[str, frozenset[str]] = {}
        self.subscribed: dict[str, tuple[str, ...]] = {}
        self.vhds_asked = False

    def request(self, type_url: str, first: bool = False) -> bytes:
        """A DeltaDiscoveryRequest: node (first request only), type_url, and
        response_nonce (field 6) when it answers a response."""
        node = self.node(1) if first else b""
        return node + _string_field(2, type_url) + _string_field(6, self.nonces.get(type_url, ""))

    @staticmethod
    def subscription(type_url: str, add: Iterable[str], remove: Iterable[str]) -> bytes:
        return b"".join(
            [
                _string_field(2, type_url),
                *(_string_field(3, n) for n in add),
                *(_string_field(4, n) for n in remove),
            ]
        )

    async def on_response(self, raw: bytes) -> None:
        envelope: Any = Envelope.FromString(raw)
        type_url, version = envelope.type_url, envelope.version
        self.stats.count(type_url, len(raw))
        self.nonces[type_url] = envelope.nonce
        before = self.versions.get(type_url, "")
        self.versions[type_url] = version
        dependent = _DEPENDENT.get(type_url)
        await self.call.write(self.request(type_url))  # ACK
        if type_url == ROUTE and not self.vhds_asked and uses_vhds(version, raw):
            self.vhds_asked = True  # Envoy's one (empty) VirtualHost request
            await self.call.write(_string_field(2, VIRTUAL_HOST))
        if dependent is None:
            return
        held = self.held.get(type_url, frozenset())
        self.held[type_url], wanted = delta_dependents(type_url, before, version, held, raw)
        have = self.subscribed.get(dependent, ())
        if wanted != have:
            self.subscribed[dependent] = wanted
            wanted_set, have_set = set(wanted), set(have)
            add = [n for n in wanted if n not in have_set]
            remove = [n for n in have if n not in wanted_set]
            await self.call.write(self.subscription(dependent, add, remove))


# -- the process ------------------------------------------------------------------


async def read_command() -> str:
    """The next line from the harness (stdin), stripped."""
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


def say(line: str) -> None:
    """One line to the harness (stdout), at once."""
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
    kind = SimulatedDeltaProxy if delta else SimulatedProxy
    say("ready")
    if await read_command() != "go":
        raise SystemExit("expected 'go'")
    cpu0 = time.process_time()
    proxies = [
        kind(channels[i % channel_count], node_id, stats) for i, node_id in enumerate(node_ids)
    ]
    tasks = [asyncio.create_task(p.run()) for p in proxies]
    while (command := await read_command()) == "stats":
        _tally(stats, tasks, cpu0)
        say(json.dumps(asdict(stats)))
    if command != "stop":
        raise SystemExit(f"expected 'stats' or 'stop', got {command!r}")
    _tally(stats, tasks, cpu0)
    for proxy in proxies:
        proxy.call.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return stats


def _tally(stats: ClientStats, tasks: list[asyncio.Task[None]], cpu0: float) -> None:
    stats.cpu_s = time.process_time() - cpu0
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    stats.errors = len(failed)
    if failed:
        stats.first_error = repr(failed[0].exception())


async def _main() -> None:
    setup = json.loads(await read_command())
    stats = await run(
        setup["target"], setup["node_ids"], setup["channels"], setup.get("delta", False)
    )
    say(json.dumps(asdict(stats)))


if __name__ == "__main__":
    asyncio.run(_main())
