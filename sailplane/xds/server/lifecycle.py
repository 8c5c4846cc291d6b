"""One ADS stream's life on the server, state of the world or delta: admission,
the first request, serving, and the end (with its gRPC status).

Admission comes before any expensive work, and before anything the client
sent is kept (see limits.py):

1. the stream is counted against its peer host before anything is read;
2. the node is read from the first request's own bytes (``first_node``), and
   the stream is counted against the node id it claims;
3. the hooks admit the node (or refuse it: PERMISSION_DENIED);
4. only then is the first request parsed, its names shared with other
   streams' (requests.py), and the stream's state built.

A refused or ended stream leaves nothing behind: its first request's bytes
are handed from frame to frame in a list and dropped from it on the way out
(a refusal's traceback holds these frames for as long as gRPC keeps the
error), and the traceback of a client's error, which holds the request
being parsed, is dropped before the stream ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from sailplane.errors import LimitExceeded, ProxyRefused
from sailplane.xds.server.context import Context, StreamContext
from sailplane.xds.server.hooks import AdmissionHooks, Peer
from sailplane.xds.server.limits import StreamCounts, peer_host
from sailplane.xds.server.requests import first_node
from sailplane.xds.server.status import StatusRegistry, StreamStatus

log = logging.getLogger("sailplane.xds")


class Stream(Protocol):
    """What the life of a stream needs of it (SotwStream, DeltaStream)."""

    def receive(self, raw: bytes) -> None:
        """Parse one request into the stream's inbox."""
        ...

    async def serve(self) -> None:
        """Until the client ends the stream (or an error or a timeout does)."""
        ...

    def end(self) -> None:
        """Give back the stream's slot and drop what the client sent."""
        ...


# Makes the stream of an admitted node: SotwStream or DeltaStream.
StreamFactory = Callable[[StreamContext, Context, str, StreamStatus], Stream]


@dataclass(frozen=True, slots=True)
class Gate:
    """What admits and accounts for streams: the admission hooks, the counts
    of open streams (per peer host, per node), the status registry, the
    source of stream ids."""

    hooks: AdmissionHooks
    counts: StreamCounts
    registry: StatusRegistry
    stream_ids: Iterator[int]


def peer_of(context: Context) -> Peer:
    auth = context.auth_context() or {}
    certs = auth.get("x509_pem_cert") or []
    return Peer(context.peer(), certs[0] if certs else None)


# Stream tasks cancelled because a write blocked past the server's write_timeout.
STUCK: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()


def write_stuck(task: asyncio.Task[object]) -> None:
    """A stream's write blocked past the timeout: give the stream up."""
    STUCK.add(task)
    task.cancel()


class WriteWatch:
    """Writes in progress and when each began, looked at every quarter of
    ``timeout`` while there are any: a stream whose write has blocked for
    ``timeout`` (to 1.25 times it) is given up (:func:`write_stuck`).

    One timer for the server, not one per write: a push to 2,000 streams
    armed and cancelled 2,000 timers, each a push onto the event loop's heap
    (ordered by Python comparisons) and a cancelled entry left in it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._since: dict[asyncio.Task[Any], float] = {}
        # The loop the sweep is armed on (a loop closed with it pending
        # must not leave the next one without).
        self._armed: asyncio.AbstractEventLoop | None = None

    async def write(self, context: Context, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        self._since[task] = time.monotonic()
        if self._armed is not loop:
            self._arm(loop)
        try:
            await context.write(message)
        finally:
            del self._since[task]

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_later(self.timeout / 4, self._sweep, loop)
        self._armed = loop

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._armed is not loop:
            return  # armed again on another loop since
        self._armed = None
        deadline = time.monotonic() - self.timeout
        for task, since in list(self._since.items()):
            if since <= deadline:
                write_stuck(task)
        if self._since:
            self._arm(loop)


async def handle(
    context: Context, new_stream: StreamFactory, delta: bool, gate: Gate, ctx: StreamContext
) -> None:
    """Count the peer host, then read the first request; see :func:`_admit`."""
    host = peer_host(context.peer())
    refused = gate.counts.open_host(host)
    if refused is not None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
    first: list[bytes] = []
    try:
        raw = await context.read()
        if raw is not grpc.aio.EOF:
            first.append(raw)
            del raw
            ctx.trimmer.received(len(first[0]))
            await _admit(context, new_stream, delta, gate, ctx, first, host)
    finally:
        first.clear()
        gate.counts.close_host(host)


async def _admit(
    context: Context,
    new_stream: StreamFactory,
    delta: bool,
    gate: Gate,
    ctx: StreamContext,
    first: list[bytes],
    host: str,
) -> None:
    message = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
    try:
        node = first_node(first[0], 1 if delta else 2, message.FromString)
    except DecodeError as exc:
        exc.__traceback__ = None
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request does not parse")
    if not node.id:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id"
        )
    limits = ctx.limits
    if len(node.id) > limits.node_id_length:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.id is longer than {limits.node_id_length} characters",
        )
    if node.ByteSize() > limits.node_bytes:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the node is larger than {limits.node_bytes} bytes"
        )
    claimed = str(node.id)
    refused = gate.counts.open_node(claimed, host)
    if refused is not None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
    try:
        try:
            node_id = await gate.hooks.on_connect(node, peer_of(context))
        except ProxyRefused as exc:
            log.warning("refused xDS stream from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        del node
        await _run(context, new_stream, delta, gate, ctx, node_id, first)
    finally:
        gate.counts.close_node(claimed, host)


async def _run(
    context: Context,
    new_stream: StreamFactory,
    delta: bool,
    gate: Gate,
    ctx: StreamContext,
    node_id: str,
    first: list[bytes],
) -> None:
    stream_id = next(gate.stream_ids)
    status = StreamStatus(node_id, stream_id, context.peer(), delta=delta)
    gate.registry.add(status)
    stream = new_stream(ctx, context, node_id, status)
    try:
        _take_first(stream, first)
        await stream.serve()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task not in STUCK:
            raise
        task.uncancel()
        # gRPC cannot end a call whose write is pending; the stream is
        # given up (its slot, its status) and keepalive ends the connection.
        log.warning("%s: stream %d stopped reading; giving it up", node_id, stream_id)
    except TimeoutError:
        log.warning("%s: stream %d left a response unanswered; closing it", node_id, stream_id)
        stream.end()
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "client is not answering responses")
    except (LimitExceeded, DecodeError) as exc:
        exc.__traceback__ = None  # its frames hold the request being parsed
        stream.end()
        if isinstance(exc, DecodeError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a request does not parse")
        log.warning("%s: stream %d: %s; closing it", node_id, stream_id, exc)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    finally:
        stream.end()
        gate.registry.remove(stream_id)
        gate.hooks.on_disconnect(node_id, stream_id)


def _take_first(stream: Stream, first: list[bytes]) -> None:
    raw = first.pop()
    try:
        stream.receive(raw)
    finally:
        del raw


__all__ = [
    "STUCK",
    "Gate",
    "Stream",
    "StreamFactory",
    "WriteWatch",
    "handle",
    "peer_of",
    "write_stuck",
]
