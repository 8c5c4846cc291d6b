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
import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from sailplane.errors import LimitExceeded, ProxyRefused
from sailplane.xds.limits import peer_host
from sailplane.xds.requests import first_node
from sailplane.xds.status import StreamStatus

if TYPE_CHECKING:
    from sailplane.xds.server import AdsServer
    from sailplane.xds.stream import StreamCore

log = logging.getLogger("sailplane.xds")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a stream: its address, and on an mTLS port the
    certificate it presented (PEM), which the hooks check against the node."""

    address: str
    certificate_pem: bytes | None = None

    def __str__(self) -> str:
        return self.address


def peer_of(context: Context) -> Peer:
    auth = context.auth_context() or {}
    certs = auth.get("x509_pem_cert") or []
    return Peer(context.peer(), certs[0] if certs else None)


# Stream tasks cancelled because a write blocked past the server's write_timeout.
STUCK: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def write_stuck(task: asyncio.Task[Any]) -> None:
    """The write timer's callback (see ``AdsServer.write``)."""
    STUCK.add(task)
    task.cancel()


async def handle(server: AdsServer, context: Context, make_stream: Any, delta: bool) -> None:
    """Count the peer host, then read the first request; see :func:`_admit`."""
    host = peer_host(context.peer())
    refused = server.counts.open_host(host)
    if refused is not None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
    first: list[Any] = []
    try:
        first.append(await context.read())
        if first[0] is not grpc.aio.EOF:
            server.trimmer.received(len(first[0]))
            await _admit(server, context, make_stream, delta, first, host)
    finally:
        first.clear()
        server.counts.close_host(host)


async def _admit(
    server: AdsServer,
    context: Context,
    make_stream: Any,
    delta: bool,
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
    limits = server.limits
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
    refused = server.counts.open_node(claimed, host)
    if refused is not None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
    try:
        try:
            node_id = await server.hooks.on_connect(node, peer_of(context))
        except ProxyRefused as exc:
            log.warning("refused xDS stream from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        del node
        await _run(server, context, make_stream, node_id, delta, first)
    finally:
        server.counts.close_node(claimed, host)


async def _run(
    server: AdsServer,
    context: Context,
    make_stream: Any,
    node_id: str,
    delta: bool,
    first: list[bytes],
) -> None:
    stream_id = next(server.stream_ids)
    status = StreamStatus(node_id, stream_id, context.peer(), delta=delta)
    server.status.add(status)
    stream: StreamCore[Any] = make_stream(server, context, node_id, status)
    try:
        _take_first(stream, first)
        await _serve(server, stream)
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
        server.status.remove(stream_id)
        server.hooks.on_disconnect(node_id, stream_id)


def _take_first(stream: StreamCore[Any], first: list[bytes]) -> None:
    raw = first.pop()
    try:
        stream.put(stream.parse(raw), len(raw))
    finally:
        del raw


async def _serve(server: AdsServer, stream: StreamCore[Any]) -> None:
    """Read requests in a task of their own; handle them, and snapshot
    changes, in this one (see :meth:`StreamCore.run`)."""
    server.cache.watch(stream.node_id, stream.wake.ring)
    reader = asyncio.create_task(stream.read_requests())
    try:
        await stream.run()
    finally:
        server.cache.unwatch(stream.node_id, stream.wake.ring)
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


__all__ = ["STUCK", "Peer", "handle", "peer_of", "write_stuck"]
