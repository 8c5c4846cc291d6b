"""Replica registration on a real etcd: the replica and its proxies under
one lease, written in batches (2,000 streams are not 2,000 writes); a lost
lease re-registered; etcd down and back; a clean stop revokes the lease.
Two in-process replicas on one store serve the same version, and
`sailplane status --config-store` lists both and their proxies."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

from sailplane.cli import main
from sailplane.server.plane import ControlPlane, ServeOptions
from sailplane.server.registration import Registration
from sailplane.store import EtcdStore, parse_url
from sailplane.store.etcdclient import EtcdClient, range_end
from sailplane.store.etcdpb import rpc_pb2
from sailplane.store.replicas import ReplicaRecord, read_mesh
from sailplane.xds.server import StreamStatus
from tests.support.etcd import Etcd
from tests.support.procs import http_get
from tests.unit.test_config_serve import REGISTRY, split
from tests.unit.test_store_etcd import SERVICE, next_change, put_file

PREFIX = "/sailplane"


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def keys(client: EtcdClient, under: str) -> list[str]:
    start = f"{PREFIX}/{under}/".encode()
    answer = client.range(rpc_pb2.RangeRequest(key=start, range_end=range_end(start)))
    return [kv.key.decode()[len(start) :] for kv in answer.kvs]


def record(name: str, version: str = "abc") -> Callable[[], ReplicaRecord]:
    return lambda: ReplicaRecord(name, "127.0.0.1:1", None, "127.0.0.1:2", 1.0, version, None)


async def test_proxies_are_written_in_batches_under_one_lease(etcd: Etcd) -> None:
    streams: list[StreamStatus] = []
    client = etcd.client()
    registration = Registration(
        etcd.client(), PREFIX, "r1", record("r1"), lambda: list(streams), ttl=3, batch=0.3
    )
    registration.start()
    try:
        await until(lambda: keys(client, "_replicas") == ["r1"])
        before = registration.transactions
        # 2,000 proxies connect within one batch window.
        for n in range(2000):
            streams.append(StreamStatus(f"proxy-{n:04}", n, f"ipv4:10.0.0.1:{n}"))
            registration.changed()
        await until(lambda: len(keys(client, "_proxies/r1")) == 2000)
        # etcd's --max-txn-ops (128) splits one batch: 16 transactions, not 2,000.
        assert registration.transactions - before <= 2 * 16, registration.transactions
        mesh = read_mesh(client, PREFIX)
        assert [r.record.name for r in mesh.replicas] == ["r1"]
        assert mesh.replicas[0].alive and len(mesh.proxies) == 2000
        # Half disconnect: their records go, in a batch again.
        before = registration.transactions
        del streams[1000:]
        registration.changed()
        await until(lambda: len(keys(client, "_proxies/r1")) == 1000)
        assert registration.transactions - before <= 2 * 8
        # The lease outlives several TTLs: it is renewed.
        await asyncio.sleep(4)
        assert keys(client, "_replicas") == ["r1"]
        # The lease lost (etcd expired it while we could not renew): registered again.
        lease = registration.lease
        client.lease_revoke(lease)
        assert keys(client, "_replicas") == [] and keys(client, "_proxies") == []
        await until(lambda: keys(client, "_replicas") == ["r1"], 5)
        await until(lambda: len(keys(client, "_proxies/r1")) == 1000, 5)
        assert registration.lease != lease
    finally:
        await registration.stop()
    # A clean stop revokes the lease: nothing left at once.
    assert keys(client, "_replicas") == [] and keys(client, "_proxies") == []
    client.close()


async def test_registration_survives_etcd_down(etcd: Etcd) -> None:
    client = etcd.client()
    streams = [StreamStatus("proxy-a", 1, "ipv4:10.0.0.1:1")]
    registration = Registration(
        etcd.client(), PREFIX, "r1", record("r1"), lambda: list(streams), ttl=2, batch=0.1
    )
    registration.start()
    try:
        await until(lambda: keys(client, "_proxies/r1") == ["proxy-a"])
        await asyncio.to_thread(etcd.stop)
        streams.append(StreamStatus("proxy-b", 2, "ipv4:10.0.0.1:2"))
        registration.changed()
        await until(lambda: registration.problem is not None)
        await asyncio.to_thread(etcd.start)
        await until(lambda: registration.problem is None, 20)
        await until(lambda: keys(client, "_proxies/r1") == ["proxy-a", "proxy-b"], 10)
        assert keys(client, "_replicas") == ["r1"]
    finally:
        await registration.stop()
    client.close()


async def test_records_are_not_configuration(etcd: Etcd) -> None:
    """Thousands of proxy records neither count against the store's key bound
    nor wake the configuration watch."""
    store = EtcdStore(parse_url(etcd.url()), 1 << 20, max_keys=2)
    client = etcd.client()
    assert store.read().texts == ()
    changes = store.changes()
    try:
        pending = asyncio.ensure_future(next_change(changes))
        await asyncio.sleep(0.3)
        lower = [(f"{PREFIX}/_proxies/r1/p{n}".encode(), b"{}") for n in range(20)]
        for key, value in [*lower, (f"{PREFIX}/_replicas/r1".encode(), b"{}")]:
            await asyncio.to_thread(client.put, key, value)
        await asyncio.sleep(0.5)
        assert not pending.done()
        revision = await asyncio.to_thread(put_file, store, SERVICE, "a.yaml")
        assert (await pending).revision == revision
        assert len(store.read().texts) == 1  # 21 records, one object: within max_keys=2
    finally:
        await changes.aclose()
        store.stop()
        client.close()


def status(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["status", *argv])
    return code, out.getvalue()


async def test_two_replicas_serve_one_version_and_status_lists_both(
    etcd: Etcd, tmp_path: Path
) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "registry.yaml").write_text(REGISTRY)
    (mesh / "vs.yaml").write_text(split(100, 0))
    assert (
        await asyncio.to_thread(main, ["apply", "-f", str(mesh), "--config-store", etcd.url()]) == 0
    )
    planes = [
        ControlPlane(
            ServeOptions(
                tmp_path / "unused",
                xds_address=("127.0.0.1", 0),
                monitor_address=("127.0.0.1", 0),
                config_store=etcd.url(),
                replica_name=name,
            )
        )
        for name in ("replica-a", "replica-b")
    ]
    for plane in planes:
        await plane.start()
    try:
        configz = [
            json.loads(
                (
                    await asyncio.to_thread(
                        http_get, f"http://127.0.0.1:{p.monitor_port}/debug/configz"
                    )
                )[1]
            )
            for p in planes
        ]
        assert [c["replica"] for c in configz] == ["replica-a", "replica-b"]
        assert configz[0]["version"] == configz[1]["version"] != ""
        client = etcd.client()
        await until(lambda: keys(client, "_replicas") == ["replica-a", "replica-b"])
        code, text = await asyncio.to_thread(status, "--config-store", etcd.url(), "--json")
        assert code == 0, text
        answer = json.loads(text)
        assert [r["name"] for r in answer["replicas"]] == ["replica-a", "replica-b"]
        assert {r["version"] for r in answer["replicas"]} == {planes[0].version}
        assert all(r["alive"] for r in answer["replicas"])
        assert answer["replicas"][0]["xds_address"] == f"127.0.0.1:{planes[0].xds_port}"
        # A new version reaches both, and both records say so.
        (mesh / "vs.yaml").write_text(split(0, 100))
        first = planes[0].version
        assert (
            await asyncio.to_thread(main, ["apply", "-f", str(mesh), "--config-store", etcd.url()])
            == 0
        )
        await until(lambda: all(p.version != first for p in planes))
        assert planes[0].version == planes[1].version

        def versions() -> set[str]:
            return {r.record.version for r in read_mesh(client, PREFIX).replicas}

        await until(lambda: versions() == {planes[0].version})
        code, text = await asyncio.to_thread(status, "--config-store", etcd.url())
        assert code == 0 and "replica-a" in text and "replica-b" in text, text
        assert "no proxy is connected" in text
        client.close()
    finally:
        for plane in planes:
            await plane.stop()
    code, text = await asyncio.to_thread(status, "--config-store", etcd.url())
    assert "no replica is registered" in text
