"""A real etcd for the tests: free ports on 127.0.0.1, a temporary data
directory, killed and removed even when a test fails.

Skips (with the reason) when the ``etcd`` binary is absent, except under
SAILPLANE_CI=1, where `.ci/run` has installed Debian's etcd-server and a
missing binary fails the run instead.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
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

    def __init__(self, binary: str, data_dir: Path, log_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.client_port, self.peer_port = free_ports(2)
        self.process: Process | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def url(self, prefix: str = "/sailplane") -> str:
        return f"etcd://{self.endpoint}{prefix}"

    def start(self) -> None:
        self.starts += 1
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = Process(
            f"etcd-{self.starts}",
            [
                self.binary,
                "--name=test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--log-level=warn",
                "--logger=zap",
            ],
            self.log_dir,
        )
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
