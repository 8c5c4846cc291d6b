"""Replicas and their proxies, as recorded in etcd under each replica's lease.

Every ``sailplane serve --config-store`` writes ``PREFIX/_replicas/NAME``
(its addresses and the configuration it serves) and one
``PREFIX/_proxies/NAME/NODE_ID`` per connected proxy, all under one lease it
keeps alive: when the replica dies, etcd deletes them when the lease expires;
when it stops cleanly, it revokes the lease and they vanish at once. The
``_`` segment is reserved (objects.RESERVED): the configuration store never
reads or watches these keys as configuration.

``read_mesh`` is what ``sailplane status --config-store`` shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

from sailplane.store.etcdclient import EtcdClient, range_end
from sailplane.store.etcdpb import rpc_pb2
from sailplane.store.objects import RESERVED

REPLICAS = f"{RESERVED}replicas"
PROXIES = f"{RESERVED}proxies"
# etcd's default --max-txn-ops: a batch larger than this is written in chunks.
MAX_TXN_OPS = 128
# The most records one status read takes (replicas and proxies each).
MAX_RECORDS = 100_000


def valid_replica_name(name: str) -> bool:
    """A key segment: no slash, printable, not too long."""
    return 0 < len(name) <= 200 and "/" not in name and name.isprintable()


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    name: str
    xds_address: str | None
    secure_xds_address: str | None
    monitor_address: str | None
    started: float  # time.time()
    version: str  # the content hash of the configuration in force
    applied_at: float | None  # when it was put in force
    store_problem: str | None = None  # why the replica could not read the store last time

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> ReplicaRecord:
        data = json.loads(value)
        return cls(
            name=str(data["name"]),
            xds_address=data.get("xds_address"),
            secure_xds_address=data.get("secure_xds_address"),
            monitor_address=data.get("monitor_address"),
            started=float(data.get("started") or 0),
            version=str(data.get("version") or ""),
            applied_at=data.get("applied_at"),
            store_problem=data.get("store_problem"),
        )


@dataclass(frozen=True, slots=True)
class ProxyRecord:
    node_id: str
    replica: str
    connected_at: float  # time.time()
    peer: str
    delta: bool  # DeltaAggregatedResources rather than state of the world

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> ProxyRecord:
        data = json.loads(value)
        return cls(
            node_id=str(data["node_id"]),
            replica=str(data["replica"]),
            connected_at=float(data.get("connected_at") or 0),
            peer=str(data.get("peer") or ""),
            delta=bool(data.get("delta")),
        )


def replica_key(prefix: str, name: str) -> bytes:
    return f"{prefix}/{REPLICAS}/{name}".encode()


def proxy_key(prefix: str, replica: str, node_id: str) -> bytes:
    return f"{prefix}/{PROXIES}/{replica}/{node_id}".encode()


def put(key: bytes, value: bytes, lease: int) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))


def chunks(operations: Sequence[rpc_pb2.RequestOp]) -> Iterator[rpc_pb2.TxnRequest]:
    """``operations`` as few transactions as etcd's --max-txn-ops allows."""
    for start in range(0, len(operations), MAX_TXN_OPS):
        yield rpc_pb2.TxnRequest(success=operations[start : start + MAX_TXN_OPS])


@dataclass(frozen=True, slots=True)
class LiveReplica:
    record: ReplicaRecord
    lease_ttl: int  # seconds left on its lease; <= 0: expired (about to vanish)

    @property
    def alive(self) -> bool:
        return self.lease_ttl > 0


@dataclass(frozen=True, slots=True)
class MeshStatus:
    replicas: tuple[LiveReplica, ...]
    proxies: tuple[ProxyRecord, ...]
    revision: int
    unreadable: tuple[str, ...] = ()  # keys whose value is not a record


def read_mesh(client: EtcdClient, prefix: str) -> MeshStatus:
    """Every registered replica (with its lease's time left) and every
    proxy they serve; StoreUnavailable when etcd cannot be reached."""
    unreadable: list[str] = []
    start = f"{prefix}/{REPLICAS}/".encode()
    replicas = client.range(
        rpc_pb2.RangeRequest(key=start, range_end=range_end(start), limit=MAX_RECORDS)
    )
    revision = replicas.header.revision
    start = f"{prefix}/{PROXIES}/".encode()
    proxies = client.range(
        rpc_pb2.RangeRequest(
            key=start, range_end=range_end(start), limit=MAX_RECORDS, revision=revision
        )
    )
    live: list[LiveReplica] = []
    for kv in replicas.kvs:
        try:
            record = ReplicaRecord.decode(kv.value)
        except (ValueError, KeyError, TypeError):
            unreadable.append(kv.key.decode("utf-8", "replace"))
            continue
        ttl = client.lease_ttl(kv.lease) if kv.lease else -1
        live.append(LiveReplica(record, ttl))
    served: list[ProxyRecord] = []
    for kv in proxies.kvs:
        try:
            served.append(ProxyRecord.decode(kv.value))
        except (ValueError, KeyError, TypeError):
            unreadable.append(kv.key.decode("utf-8", "replace"))
    return MeshStatus(tuple(live), tuple(served), revision, tuple(unreadable))
