"""Reading and writing PEM files, with errors that name the file.

Files are written atomically (a temporary file in the same directory, then
``os.replace``) so a crash never leaves half a key. Private keys are created
with mode 0600 by ``os.open`` itself: there is no moment at which the key
exists with wider permissions, as there would be with write-then-chmod.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sailplane.ca.keys import PrivateKey
from sailplane.errors import CAError

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def certificates_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM, in the given order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Atomically replace ``path`` with ``data``; the file is created with ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # O_EXCL: never follow a planted symlink or reuse someone else's file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise CAError(f"cannot write: {e.strerror or e}", source=path) from e


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a private key: mode 0600 from the moment the file exists."""
    write_file(path, data, mode=SECRET_MODE)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CAError(f"cannot read: {e.strerror or e}", source=path) from e


def parse_certificates(data: bytes, source: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; at least one, else :class:`CAError`."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CAError(f"no PEM certificate could be read ({e})", source=source) from None


def parse_private_key(data: bytes, source: Path | str) -> PrivateKey:
    """An unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) of a supported type."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CAError("encrypted private keys are not supported", source=source) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CAError(f"not a readable PEM private key ({e})", source=source) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"unsupported key type {type(key).__name__}: use ECDSA or RSA", source=source)
    return key


def load_certificates(path: Path) -> list[x509.Certificate]:
    return parse_certificates(read_file(path), path)


def load_private_key(path: Path) -> PrivateKey:
    return parse_private_key(read_file(path), path)
