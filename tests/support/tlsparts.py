"""Real TLS for the tests: a CA and certificates (``cryptography``), Kubernetes
Secret objects holding them, a TLS backend that says who it is, and a client."""

from __future__ import annotations

import base64
import contextlib
import datetime
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    serial: int = 0


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertAuthority:
    """A root CA that issues server and client certificates."""

    def __init__(self, name: str = "test root") -> None:
        self.key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, *dns_names: str, client: bool = False) -> Issued:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert.serial_number
        )


def tls_secret(
    name: str, issued: Issued, ca_pem: bytes | None = None, namespace: str = "default"
) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret, base64 ``data`` as kubectl writes it."""
    data = {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem}
    if ca_pem is not None:
        data["ca.crt"] = ca_pem
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def client_context(
    ca_pem: bytes, client: Issued | None = None, alpn: tuple[str, ...] = ()
) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if client is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            cert.write_bytes(client.cert_pem)
            key.write_bytes(client.key_pem)
            context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@dataclass
class Handshake:
    peer_serial: int
    reply: bytes


def tls_request(
    address: str, port: int, server_name: str, context: ssl.SSLContext, request: bytes
) -> Handshake:
    """Connect, handshake with ``server_name`` as SNI, send ``request``, read
    the reply to the end; raises ssl.SSLError / OSError when refused."""
    raw = socket.create_connection((address, port), timeout=5)
    with raw, context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        serial = x509.load_der_x509_certificate(der).serial_number
        tls.sendall(request)
        chunks = []
        while True:
            try:
                chunk = tls.recv(65536)
            except ssl.SSLEOFError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return Handshake(serial, b"".join(chunks))


def https_get(
    address: str, port: int, host: str, context: ssl.SSLContext, path: str = "/api/weather"
) -> Handshake:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return tls_request(address, port, host, context, request.encode())


@contextlib.contextmanager
def accepting(address: str, port: int, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    """A TCP listener whose thread hands every accepted connection to
    ``handle`` (which closes it), until the block ends."""
    listener = socket.create_server((address, port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@contextlib.contextmanager
def tls_backend(address: str, port: int, issued: Issued, name: str) -> Iterator[None]:
    """A TLS server that answers every connection with ``name`` and closes:
    its own certificate and its name reach a client only through passthrough."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        context.load_cert_chain(cert, key)

    def answer(conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(name.encode())
        except (OSError, ssl.SSLError):
            conn.close()

    with accepting(address, port, answer):
        yield
