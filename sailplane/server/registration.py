"""This replica and its proxies, registered in etcd under a lease.

``Registration.run`` is one background task: it grants a lease (TTL 10 s),
renews it every TTL/3, and writes this replica's record and one record per
connected proxy under it (store/replicas.py). Streams come and go on the
ADS path, which only sets an event (:class:`NotifyingAdmission`); the task
then waits ``batch`` seconds, reads the open streams from the status
registry and writes the difference since its last write: one transaction
per batch however many proxies connected (chunked only past etcd's
--max-txn-ops). The etcd calls are synchronous and run in a thread, never
on the event loop.

etcd down: the plane keeps serving; the task retries with backoff, and if
the lease expired meanwhile (its keys are gone) grants a new one and writes
everything again. A clean stop revokes the lease: the records vanish at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from envoy.config.core.v3 import base_pb2

from sailplane.errors import StoreError
from sailplane.store.etcdclient import EtcdClient
from sailplane.store.etcdpb import rpc_pb2
from sailplane.store.replicas import (
    ProxyRecord,
    ReplicaRecord,
    chunks,
    delete,
    proxy_key,
    put,
    replica_key,
)
from sailplane.xds import Peer
from sailplane.xds.server import StreamStatus
from sailplane.xds.server.hooks import AdmissionHooks

log = logging.getLogger("sailplane.registration")

LEASE_TTL = 10  # seconds: a dead replica's proxies are listed at most this long
BATCH = 0.5  # seconds: the least time between two writes of proxy records
# The most proxy records one replica writes (the ADS limits bound streams
# well below this; this bounds the keys whatever they are set to).
MAX_PROXIES = 50_000
_RETRY_FIRST, _RETRY_MAX = 0.2, 2.0


class NotifyingAdmission:
    """Admission (and NACKs) as ``inner`` decides, plus a call of ``changed``
    on every admitted stream and every ended one: a flag set on the loop,
    nothing more on the ADS path."""

    def __init__(self, inner: AdmissionHooks, changed: Callable[[], None]) -> None:
        self.inner = inner
        self.changed = changed

    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        key = await self.inner.on_connect(node, peer)
        self.changed()
        return key

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        self.inner.on_disconnect(node_id, stream_id)
        self.changed()

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        on_nack = getattr(self.inner, "on_nack", None)
        if on_nack is not None:
            on_nack(node_id, type_url, version, message)


class Registration:
    """Keeps ``record()`` and the proxies of ``streams()`` in etcd under a lease."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        name: str,
        record: Callable[[], ReplicaRecord],
        streams: Callable[[], list[StreamStatus]],
        ttl: int = LEASE_TTL,
        batch: float = BATCH,
        max_proxies: int = MAX_PROXIES,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.name = name
        self.record = record
        self.streams = streams
        self.ttl = ttl
        self.batch = batch
        self.max_proxies = max_proxies
        self.lease = 0
        self.problem: str | None = None
        self.transactions = 0  # written so far (tests count them)
        self._wake = asyncio.Event()
        self._published: dict[str, ProxyRecord] = {}
        self._replica_value: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Something to write: a stream opened or ended, the configuration changed."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stop writing and revoke the lease (the records vanish at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.lease:
            try:
                await asyncio.to_thread(self.client.lease_revoke, self.lease)
                log.info("replica %s: unregistered (lease revoked)", self.name)
            except StoreError as exc:
                log.warning(
                    "replica %s: lease not revoked (%s); it expires by itself", self.name, exc
                )
            self.lease = 0
        self.client.close()

    async def run(self) -> None:
        retry = _RETRY_FIRST
        renew_at = 0.0
        while True:
            try:
                if not self.lease:
                    self.lease = await asyncio.to_thread(self.client.lease_grant, self.ttl)
                    self._published, self._replica_value = {}, None
                    renew_at = time.monotonic() + self.ttl / 3
                    log.info("replica %s: registered (lease %x)", self.name, self.lease)
                    self._wake.set()
                elif time.monotonic() >= renew_at:
                    left = await asyncio.to_thread(self.client.lease_keepalive, self.lease)
                    if left <= 0:
                        log.warning("replica %s: lease expired; registering again", self.name)
                        self.lease = 0
                        continue
                    renew_at = time.monotonic() + self.ttl / 3
                if self._wake.is_set():
                    self._wake.clear()
                    await self._write()
                if self.problem is not None:
                    log.info("replica %s: etcd is back; registration current", self.name)
                self.problem, retry = None, _RETRY_FIRST
            except StoreError as exc:
                if self.problem is None:
                    log.warning("replica %s: registration failed (%s); retrying", self.name, exc)
                self.problem = str(exc)
                self._wake.set()  # write everything that changed once it is back
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(renew_at - time.monotonic(), 0))
                await asyncio.sleep(self.batch)  # gather the burst into one write

    def _desired(self) -> dict[str, ProxyRecord]:
        desired: dict[str, ProxyRecord] = {}
        for stream in self.streams():  # by (proxy, stream id): the newest last
            if len(desired) >= self.max_proxies and stream.proxy not in desired:
                continue
            desired[stream.proxy] = ProxyRecord(
                stream.proxy, self.name, stream.connected_at, stream.peer, stream.delta
            )
        return desired

    async def _write(self) -> None:
        """This replica's record if it changed, and the proxy records that did."""
        operations: list[rpc_pb2.RequestOp] = []
        value = self.record().encode()
        if value != self._replica_value:
            operations.append(put(replica_key(self.prefix, self.name), value, self.lease))
        desired = self._desired()
        published = self._published
        operations += [
            put(proxy_key(self.prefix, self.name, node), record.encode(), self.lease)
            for node, record in desired.items()
            if published.get(node) != record
        ]
        operations += [
            delete(proxy_key(self.prefix, self.name, node))
            for node in published
            if node not in desired
        ]
        for request in chunks(operations):
            await asyncio.to_thread(self.client.txn, request)
            self.transactions += 1
        self._published, self._replica_value = desired, value
