"""A small etcd v3 client: what the configuration store needs, nothing more.

Unary calls (Range, Txn, Compact, the Lease calls) are synchronous, so the
reloader's worker thread, the replica registration's thread and the CLI use
them directly; Watch is a grpc.aio stream for the event loop. The RPCs are
called by method path with our own generated messages (etcdpb/, see
regenerate.sh): no grpc stubs, so no grpcio version check and no
third-party etcd client with its own grpcio/protobuf pins.

Endpoints are tried in turn: a call that finds one unreachable moves on to
the next, and the one that answered is tried first next time. When none
answers, :class:`StoreUnavailable` names them all.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

from sailplane.errors import StoreError, StoreUnavailable
from sailplane.store.etcdpb import rpc_pb2

# How long one unary call may take on one endpoint before the next is tried.
CALL_TIMEOUT = 3.0
# Responses as large as the largest value we write, times the keys of one read.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Find a dead member of a watch stream within ~15 s even without a FIN.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnect quickly after etcd comes back.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
# Codes that say "this endpoint, not this request": try the next one.
_TRY_NEXT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)

Reply = TypeVar("Reply")


def range_end(prefix: bytes) -> bytes:
    """The end of the range of every key starting with ``prefix`` (etcd's rule:
    the prefix with its last byte plus one)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """TLS to etcd (``etcds://``): the CA that signed etcd's certificate
    (None: the system's roots) and, for etcd's --client-cert-auth, this
    client's certificate and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files now; ValueError naming one that cannot be read."""

        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def target(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EtcdClient:
    """Range/Txn/Compact against the first endpoint that answers; Watch as a stream."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        timeout: float = CALL_TIMEOUT,
        tls: EtcdTLS | None = None,
    ) -> None:
        """``tls``: connect with TLS (its files are read now: ValueError)."""
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self.tls = tls
        self._credentials = tls.credentials() if tls is not None else None
        self._channels: dict[int, grpc.Channel] = {}
        self._preferred = 0
        self._lock = threading.Lock()

    @property
    def names(self) -> str:
        return ", ".join(target(e) for e in self.endpoints)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def _channel(self, index: int) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(index)
            if channel is None:
                address = target(self.endpoints[index])
                channel = (
                    grpc.secure_channel(address, self._credentials, options=_CHANNEL_OPTIONS)
                    if self._credentials is not None
                    else grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
                )
                self._channels[index] = channel
            return channel

    def _call(
        self, method: str, request: Any, reply: Callable[[bytes], Reply], stream: bool = False
    ) -> Reply:
        """One request, one reply; ``stream``: the first reply of a
        stream_stream method (LeaseKeepAlive has no unary form)."""
        problems: list[str] = []
        count = len(self.endpoints)
        for step in range(count):
            index = (self._preferred + step) % count
            try:
                if stream:
                    answer = self._first_of_stream(index, method, request, reply)
                else:
                    call = self._channel(index).unary_unary(
                        method,
                        request_serializer=lambda m: m.SerializeToString(),
                        response_deserializer=reply,
                    )
                    answer = call(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                if code not in _TRY_NEXT:
                    raise StoreError(f"etcd {method.rsplit('/', 1)[-1]}: {detail}") from exc
                problems.append(f"{target(self.endpoints[index])}: {code.name.lower()}")
                continue
            self._preferred = index
            return answer
        raise StoreUnavailable(f"etcd is unreachable ({'; '.join(problems)})")

    def _first_of_stream(
        self, index: int, method: str, request: Any, reply: Callable[[bytes], Reply]
    ) -> Reply:
        call = self._channel(index).stream_stream(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply,
        )
        responses = call(iter([request]), timeout=self.timeout)
        try:
            answer: Reply = next(responses)
        except StopIteration:
            raise StoreError(f"etcd {method.rsplit('/', 1)[-1]}: no reply") from None
        finally:
            responses.cancel()
        return answer

    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        reply = self._call("/etcdserverpb.KV/Range", request, rpc_pb2.RangeResponse.FromString)
        return cast(rpc_pb2.RangeResponse, reply)

    def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        reply = self._call("/etcdserverpb.KV/Txn", request, rpc_pb2.TxnResponse.FromString)
        return cast(rpc_pb2.TxnResponse, reply)

    def compact(self, revision: int) -> rpc_pb2.CompactionResponse:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=True)
        reply = self._call(
            "/etcdserverpb.KV/Compact", request, rpc_pb2.CompactionResponse.FromString
        )
        return cast(rpc_pb2.CompactionResponse, reply)

    def lease_grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its ID."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        reply = self._call(
            "/etcdserverpb.Lease/LeaseGrant", request, rpc_pb2.LeaseGrantResponse.FromString
        )
        answer = cast(rpc_pb2.LeaseGrantResponse, reply)
        if answer.error:
            raise StoreError(f"etcd LeaseGrant: {answer.error}")
        return answer.ID

    def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease``; the TTL it has now, 0 when it expired (its keys are gone)."""
        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease)
        reply = self._call(
            "/etcdserverpb.Lease/LeaseKeepAlive",
            request,
            rpc_pb2.LeaseKeepAliveResponse.FromString,
            stream=True,
        )
        return cast(rpc_pb2.LeaseKeepAliveResponse, reply).TTL

    def lease_revoke(self, lease: int) -> None:
        """End ``lease`` now: its keys are deleted at once."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease)
        self._call(
            "/etcdserverpb.Lease/LeaseRevoke", request, rpc_pb2.LeaseRevokeResponse.FromString
        )

    def lease_ttl(self, lease: int) -> int:
        """Seconds ``lease`` has left; -1 when it does not exist (expired, revoked)."""
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease)
        reply = self._call(
            "/etcdserverpb.Lease/LeaseTimeToLive",
            request,
            rpc_pb2.LeaseTimeToLiveResponse.FromString,
        )
        return cast(rpc_pb2.LeaseTimeToLiveResponse, reply).TTL

    def put(self, key: bytes, value: bytes) -> int:
        """One Put (tests and tools); the revision it made."""
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))
        return self.txn(rpc_pb2.TxnRequest(success=[put])).header.revision

    async def watch(
        self, index: int, request: rpc_pb2.WatchCreateRequest
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """The responses of one watch on endpoint ``index``, until the stream
        breaks (grpc.aio.AioRpcError) or the caller stops iterating."""
        address = target(self.endpoints[index])
        async with (
            grpc.aio.secure_channel(address, self._credentials, options=_CHANNEL_OPTIONS)
            if self._credentials is not None
            else grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        ) as channel:
            stream = channel.stream_stream(
                "/etcdserverpb.Watch/Watch",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=rpc_pb2.WatchResponse.FromString,
            )
            call = stream(wait_for_ready=False)
            try:
                await call.write(rpc_pb2.WatchRequest(create_request=request))
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        return
                    yield response
            finally:
                call.cancel()
