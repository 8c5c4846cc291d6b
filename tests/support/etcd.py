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
from sailplane.store.etcdclient import EtcdClient, EtcdTLS
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


@dataclass(frozen=True)
class EtcdCerts:
    """A CA of the test's own, etcd's serving certificate (127.0.0.1,
    localhost) and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def tls(self, client: bool = True, ca: Path | None = None) -> EtcdTLS:
        return EtcdTLS(
            ca or self.ca,
            self.client_cert if client else None,
            self.client_key if client else None,
        )


def make_etcd_certs(directory: Path) -> EtcdCerts:
    """Certificates for an etcd with TLS and --client-cert-auth (not the
    mesh's: etcd checks a hostname, which SPIFFE certificates do not name)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write(
        stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> tuple[Path, Path]:
        cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
              signer: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:  # fmt: skip
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        build("etcd test CA", ca_key, name("etcd test CA"), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, _ = write("ca", ca, ca_key)
    leaves = {}
    for stem, usage, sans in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("sailplane")]),
    ):  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            build(stem, key, ca.subject, ca_key)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaves[stem] = write(stem, cert, key)
    return EtcdCerts(ca_file, *leaves["server"], *leaves["client"])


class Etcd:
    """One single-member etcd; :meth:`stop` and :meth:`start` keep its data
    and its ports, as a restarted member would. With ``certs``: TLS on the
    client port, client certificates required (--client-cert-auth)."""

    def __init__(
        self,
        binary: str,
        data_dir: Path,
        log_dir: Path,
        name: str = "test",
        ports: tuple[int, int] | None = None,
        initial_cluster: str = "",
        certs: EtcdCerts | None = None,
    ) -> None:
        self.binary = binary
        self.certs = certs
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
        if self.certs is not None:
            files = f"ca={self.certs.ca}&cert={self.certs.client_cert}&key={self.certs.client_key}"
            return f"etcds://{self.endpoint}{prefix}?{files}"
        return f"etcd://{self.endpoint}{prefix}"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process, not waiting for it (a cluster's members wait for each other)."""
        self.starts += 1
        client = f"{'https' if self.certs else 'http'}://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls = (
            [
                f"--cert-file={self.certs.server_cert}",
                f"--key-file={self.certs.server_key}",
                f"--trusted-ca-file={self.certs.ca}",
                "--client-cert-auth",
            ]
            if self.certs
            else []
        )
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
                *tls,
            ],
            self.log_dir,
        )

    def wait_ready(self) -> None:
        """Until a linearizable read on this member answers (a leader is elected)."""
        assert self.process is not None
        client_ = self.client(timeout=1.0)
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

    def client(self, timeout: float = 3.0) -> EtcdClient:
        tls = self.certs.tls() if self.certs is not None else None
        return EtcdClient([("127.0.0.1", self.client_port)], timeout=timeout, tls=tls)


@pytest.fixture
def etcd_tls() -> Iterator[Etcd]:
    """An etcd with TLS on its client port and client certificates required."""
    binary = require_etcd()
    root = Path(tempfile.mkdtemp(prefix="sailplane-etcd-tls-"))
    server = Etcd(binary, root / "data", root, certs=make_etcd_certs(root / "certs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


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
