"""Pure certificate builders and checks: no files, no clock, no cache.

Profiles follow Istio's so that Envoy, Istio proxies and SPIFFE tooling accept them:

- root: ``CA:TRUE`` (critical), keyCertSign + cRLSign (critical), SKI and AKI;
- intermediate (one per control-plane replica, ``sailplane ca intermediate``):
  as the root with a path length of 0, and an AKI pointing at its issuer;
- workload leaf: empty subject with a critical subjectAltName holding exactly
  one SPIFFE URI (RFC 5280 4.2.1.6 requires the SAN to be critical when the
  subject is empty), ``CA:FALSE``, digitalSignature (+ keyEncipherment for
  RSA keys, which can do key transport; ECDSA keys cannot), EKU serverAuth +
  clientAuth (every sidecar is both), SKI, and an AKI pointing at the issuer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sailplane.ca.keys import PrivateKey, public_key_matches, signature_hash
from sailplane.errors import CAError

_WorkloadPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _key_usage(*, digital_signature: bool, key_encipherment: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(
    issuer: x509.Certificate, issuer_key: PrivateKey
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_root_certificate(
    key: PrivateKey,
    *,
    common_name: str,
    organization: str,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A self-signed root CA certificate for ``key``."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=False, key_encipherment=False, ca=True), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, signature_hash(key))
    )


def build_intermediate_certificate(
    public_key: _WorkloadPublicKey,
    *,
    common_name: str,
    organization: str,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """An intermediate CA for ``public_key`` signed by ``issuer``: ``CA:TRUE``
    with a path length of 0, so it signs workloads and never another CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=False, key_encipherment=False, ca=True), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer, issuer_key), critical=False)
        .sign(issuer_key, signature_hash(issuer_key))
    )


def build_workload_certificate(
    *,
    spiffe_uri: str,
    public_key: _WorkloadPublicKey,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> x509.Certificate:
    """A workload leaf for ``spiffe_uri`` signed by ``issuer``; the URI is not re-checked.
    ``dns_names`` and ``ip_addresses``: more SANs, for a server that clients
    check by hostname (sailplane's own xDS certificate, for gRPC's ``tls``
    xDS channel credentials, gRFC A65)."""
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_uri)]
    names.extend(x509.DNSName(name) for name in dns_names)
    names.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=is_rsa, ca=False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(names),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer, issuer_key), critical=False)
        .sign(issuer_key, signature_hash(issuer_key))
    )


def sha256_fingerprint(certificate: x509.Certificate) -> str:
    """``AB:CD:...``, the form ``openssl x509 -fingerprint -sha256`` prints."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def is_self_signed(certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_is_ca(certificate: x509.Certificate, source: str) -> None:
    subject = certificate.subject.rfc4514_string()
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CAError(
            f"{subject!r} is not a CA certificate (needs basicConstraints CA:TRUE)", source=source
        )
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise CAError(
            f"{subject!r} may not sign certificates (keyUsage lacks keyCertSign)", source=source
        )


def check_ca_material(
    certificate: x509.Certificate,
    key: PrivateKey,
    chain: Sequence[x509.Certificate],
    *,
    now: datetime,
    cert_source: str,
    key_source: str,
    chain_source: str,
) -> tuple[x509.Certificate, ...]:
    """Check that ``certificate`` + ``key`` can sign and that ``chain`` leads to a root.

    Returns the chain above ``certificate`` (intermediates, then the root),
    without repeats of ``certificate`` itself: Istio's ``cert-chain.pem``
    starts with the CA certificate, and that file should work as is.
    Raises :class:`CAError` naming the source that is wrong.
    """
    if not public_key_matches(certificate, key):
        raise CAError(
            f"private key does not match the certificate in {cert_source}", source=key_source
        )
    _check_is_ca(certificate, cert_source)
    if now >= certificate.not_valid_after_utc:
        raise CAError(
            f"CA certificate expired at {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}",
            source=cert_source,
        )
    above = tuple(c for c in chain if c != certificate)
    if is_self_signed(certificate):
        if above:
            raise CAError(
                "the CA certificate is a self-signed root, so no chain may follow it",
                source=chain_source,
            )
        return ()
    if not above:
        raise CAError(
            "the CA certificate is an intermediate: give its chain up to the root",
            source=cert_source,
        )
    for child, parent in zip((certificate, *above), above, strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise CAError(
                f"{child.subject.rfc4514_string()!r} is not signed by the next certificate "
                f"{parent.subject.rfc4514_string()!r}; order the chain leaf-to-root",
                source=chain_source,
            ) from None
        _check_is_ca(parent, chain_source)
        if now >= parent.not_valid_after_utc:
            raise CAError(
                f"{parent.subject.rfc4514_string()!r} expired at "
                f"{parent.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}",
                source=chain_source,
            )
    if not is_self_signed(above[-1]):
        raise CAError(
            "the chain does not end with a self-signed root certificate", source=chain_source
        )
    return above
