"""SPIFFE IDs of workloads: ``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT``.

This is Istio's identity scheme; the checks follow the SPIFFE ID spec
(lower-case trust domain of ``[a-z0-9._-]``, path segments of
``[A-Za-z0-9._-]``, no ``.``/``..`` segments, no query, fragment, port or
user info).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from cryptography import x509

from sailplane.errors import SpiffeIdError

DEFAULT_TRUST_DOMAIN = "cluster.local"

_SCHEME = "spiffe://"
_MAX_LENGTH = 2048
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_SHAPE = "expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT"


class SpiffeId(NamedTuple):
    """A parsed workload identity; unpacks as ``(trust_domain, namespace, service_account)``."""

    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"{_SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def check_trust_domain(trust_domain: str) -> None:
    """Raise :class:`SpiffeIdError` unless ``trust_domain`` is a valid SPIFFE trust domain."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise SpiffeIdError(
            f"invalid trust domain {trust_domain!r}: use lower-case letters, digits, '.', '-', '_'"
        )


def _check_segment(what: str, value: str) -> None:
    if not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise SpiffeIdError(f"invalid {what} {value!r}: use letters, digits, '.', '-', '_'")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The SPIFFE URI of a workload; raises :class:`SpiffeIdError` on bad parts."""
    check_trust_domain(trust_domain)
    _check_segment("namespace", namespace)
    _check_segment("service account", service_account)
    return SpiffeId(trust_domain, namespace, service_account).uri


def parse_spiffe_id(uri: str) -> SpiffeId:
    """``spiffe://td/ns/NS/sa/SA`` -> ``SpiffeId("td", "NS", "SA")``.

    Raises :class:`SpiffeIdError` (a ``ValueError``) naming what is wrong.
    """
    if not isinstance(uri, str):
        raise SpiffeIdError(f"SPIFFE ID must be a string, not {type(uri).__name__}")
    if len(uri) > _MAX_LENGTH:
        raise SpiffeIdError(f"malformed SPIFFE ID: longer than {_MAX_LENGTH} characters")
    if not uri.startswith(_SCHEME):
        raise SpiffeIdError(f"malformed SPIFFE ID {uri!r}: {_SHAPE}")
    trust_domain, slash, path = uri[len(_SCHEME) :].partition("/")
    if not slash:
        raise SpiffeIdError(f"malformed SPIFFE ID {uri!r}: no path; {_SHAPE}")
    try:
        check_trust_domain(trust_domain)
    except SpiffeIdError as e:
        raise SpiffeIdError(f"malformed SPIFFE ID {uri!r}: {e}") from None
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        raise SpiffeIdError(f"malformed SPIFFE ID {uri!r}: {_SHAPE}")
    try:
        _check_segment("namespace", parts[1])
        _check_segment("service account", parts[3])
    except SpiffeIdError as e:
        raise SpiffeIdError(f"malformed SPIFFE ID {uri!r}: {e}") from None
    return SpiffeId(trust_domain, parts[1], parts[3])


def _as_certificate(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode("ascii") if isinstance(cert, str) else cert
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)  # the first one: the leaf
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise SpiffeIdError(f"not a certificate (PEM or DER): {e}") from None


def identity_of_certificate(cert: x509.Certificate | bytes | str) -> str:
    """The SPIFFE URI a certificate asserts: its one and only URI SAN.

    ``cert`` is a certificate object, PEM (of a chain: the first certificate is
    used) or DER. Certificates with zero or several URI SANs, or a URI that is
    not a workload SPIFFE ID, raise :class:`SpiffeIdError`; a peer's identity
    must never be ambiguous.
    """
    certificate = _as_certificate(cert)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise SpiffeIdError("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise SpiffeIdError(f"certificate must have exactly one URI SAN, found {len(uris)}")
    parse_spiffe_id(uris[0])
    return uris[0]
