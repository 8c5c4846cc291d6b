"""A real etcd for the tests: free ports on 127.0.0.1, a temporary data
directory, killed and removed even when a test fails; ``etcd_cluster``:
three members (three local processes, one --initial-cluster).

Skips (with the reason) when the ``etcd`` binary is absent, except under
SAILPLANE_CI=1, where `.ci/run` has installed Debian's etcd-server and a
missing binary fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sailplane.errors import StoreUnavailable
from sailplane.store.etcdclient import EtcdClient
from sailplane.store.etcdpb import rpc_pb2
from tests.support.ci import skip_unless_ci
from tests.support.procs import Process, free_ports

ETCD = shutil.which("etcd")


def require_etcd() -> str:
    reason = skip_unless_ci(
        None if ETCD else "no etcd binary on PATH (apt-get install etcd-server etcd-client)"
    )
    if reason is not None:
        pytest.skip(reason)
    assert ETCD is not None
    return ETCD


class Etcd:
    """One single-member etcd; :meth:`stop` and :meth:`start` keep its data
    and its ports, as a restarted member would."""

    def __init__(
        self,
        binary: str,
        data_dir: Path,
        log_dir: Path,
        name: str = "test",
        ports: tuple[int, int] | None = None,
        initial_cluster: str = "",
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.name = name
        self.client_port, self.peer_port = ports or free_ports(2)
        # NAME=PEER_URL,... of every member (a cluster); this one alone by default.
        self.initial_cluster = initial_cluster or f"{name}=http://127.0.0.1:{self.peer_port}"
        self.process: Process | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def url(self, prefix: str = "/sailplane") -> str:
        return f"etcd://{self.endpoint}{prefix}"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process, not waiting for it (a cluster's members wait for each other)."""
        self.starts += 1
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = Process(
            f"etcd-{self.name}-{self.starts}",
            [
                self.binary,
                f"--name={self.name}",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={self.initial_cluster}",
                "--initial-cluster-token=sailplane-test",
                "--log-level=warn",
                "--logger=zap",
            ],
            self.log_dir,
        )

    def wait_ready(self) -> None:
        """Until a linearizable read on this member answers (a leader is elected)."""
        assert self.process is not None
        client_ = EtcdClient([("127.0.0.1", self.client_port)], timeout=1.0)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client_.range(rpc_pb2.RangeRequest(key=b"/"))
                    return
                except StoreUnavailable:
                    if not self.process.alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"etcd did not start:\n{self.process.log()}") from None
                    time.sleep(0.1)
        finally:
            client_.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def kill(self) -> None:
        """SIGKILL: a member that vanishes without a goodbye."""
        if self.process is not None:
            self.process.popen.kill()
            self.process.popen.wait(5)
            self.process.stop()
            self.process = None

    def pause(self, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT): a member that hangs, its connections open."""
        assert self.process is not None
        os.kill(self.process.popen.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def client(self) -> EtcdClient:
        return EtcdClient([("127.0.0.1", self.client_port)])


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    binary = require_etcd()
    root = Path(tempfile.mkdtemp(prefix="sailplane-etcd-"))
    server = Etcd(binary, root / "data", root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class EtcdCluster:
    members: list[Etcd]

    def url(self, prefix: str = "/sailplane") -> str:
        return f"etcd://{','.join(m.endpoint for m in self.members)}{prefix}"


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """Three members on loopback, started together (each waits for a quorum)."""
    binary = require_etcd()
    root = Path(tempfile.mkdtemp(prefix="sailplane-etcd-cluster-"))
    names = ["m0", "m1", "m2"]
    ports = free_ports(6)
    pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(3)]
    initial = ",".join(
        f"{n}=http://127.0.0.1:{peer}" for n, (_, peer) in zip(names, pairs, strict=True)
    )
    members = [
        Etcd(binary, root / n, root, n, pair, initial) for n, pair in zip(names, pairs, strict=True)
    ]
    try:
        for member in members:
            member.launch()
        for member in members:
            member.wait_ready()
        yield EtcdCluster(members)
    finally:
        for member in members:
            member.stop()
        shutil.rmtree(root, ignore_errors=True)
