"""The certificate authority: a signing certificate and key that mint workload identities.

A :class:`CertificateAuthority` holds no mutable state; caching and rotation
live in :mod:`sailplane.ca.store`, files in :mod:`sailplane.ca.state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sailplane.ca.certs import (
    build_intermediate_certificate,
    build_root_certificate,
    build_workload_certificate,
    check_ca_material,
    sha256_fingerprint,
)
from sailplane.ca.clock import Clock, aware_now, utc_now
from sailplane.ca.identity import IssuedIdentity
from sailplane.ca.keys import KeyFactory, PrivateKey, ecdsa_p256, private_key_pem
from sailplane.ca.pemfiles import certificates_pem
from sailplane.ca.spiffe import (
    DEFAULT_TRUST_DOMAIN,
    check_trust_domain,
    parse_spiffe_id,
    spiffe_id,
)
from sailplane.errors import CAError

DEFAULT_WORKLOAD_TTL = timedelta(hours=24)
DEFAULT_INTERMEDIATE_TTL = timedelta(days=365)
DEFAULT_ROOT_TTL = timedelta(days=3650)
DEFAULT_ROOT_COMMON_NAME = "sailplane root CA"
ROOT_ORGANIZATION = "sailplane"
CLOCK_SKEW = timedelta(minutes=5)
"""notBefore is backdated by this much (at most a tenth of the lifetime), as Istio
does, so a peer whose clock runs a little behind still accepts a fresh cert."""


def _backdate(ttl: timedelta) -> timedelta:
    return min(CLOCK_SKEW, ttl / 10)


def _check_ttl(ttl: timedelta) -> None:
    if ttl <= timedelta(0):
        raise ValueError(f"certificate lifetime must be positive, got {ttl}")


def _check_key(key: object) -> PrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"the key factory returned {type(key).__name__}; use ECDSA or RSA keys")
    return key


def create_root(
    *,
    common_name: str = DEFAULT_ROOT_COMMON_NAME,
    ttl: timedelta = DEFAULT_ROOT_TTL,
    clock: Clock = utc_now,
    key_factory: KeyFactory = ecdsa_p256,
) -> tuple[x509.Certificate, PrivateKey]:
    """A new self-signed root certificate (``O=sailplane, CN=common_name``) and its key."""
    _check_ttl(ttl)
    now = aware_now(clock).replace(microsecond=0)
    key = _check_key(key_factory())
    certificate = build_root_certificate(
        key,
        common_name=common_name,
        organization=ROOT_ORGANIZATION,
        not_before=now - _backdate(ttl),
        not_after=now + ttl,
    )
    return certificate, key


@dataclass(frozen=True, slots=True)
class IntermediateCA:
    """A signing certificate for another control-plane replica, its key, and
    the certificates above it up to the root (leaf-to-root)."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class CAInfo:
    """What ``sailplane ca show`` prints: enough to compare roots across machines."""

    trust_domain: str
    root_subject: str
    root_fingerprint_sha256: str
    root_serial: int
    root_not_before: datetime
    root_not_after: datetime
    signing_subject: str
    signing_not_after: datetime
    intermediate: bool


class CertificateAuthority:
    """Signs workload certificates with ``certificate``/``key``.

    ``chain`` is what lies above ``certificate``: empty for a self-signed
    root, else the intermediates and the root, leaf-to-root. The material is
    checked on construction (key matches, CA:TRUE, not expired, chain links);
    problems raise :class:`CAError`. ``key_factory`` makes workload keys.
    """

    def __init__(
        self,
        certificate: x509.Certificate,
        key: PrivateKey,
        chain: Sequence[x509.Certificate] = (),
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Clock = utc_now,
        key_factory: KeyFactory = ecdsa_p256,
    ) -> None:
        check_trust_domain(trust_domain)
        self._chain = check_ca_material(
            certificate,
            key,
            chain,
            now=aware_now(clock),
            cert_source="CA certificate",
            key_source="CA key",
            chain_source="CA chain",
        )
        self._certificate = certificate
        self._key = key
        self._trust_domain = trust_domain
        self._clock = clock
        self._key_factory = key_factory
        self._root = self._chain[-1] if self._chain else certificate
        # Served after each leaf: an intermediate and everything above it, as Istio does;
        # nothing for a self-signed root, which peers already hold as the trust bundle.
        self._served_chain_pem = (
            certificates_pem((certificate, *self._chain)) if self._chain else b""
        )
        self._trust_bundle_pem = certificates_pem([self._root])
        # A leaf must not outlive anything above it.
        self._latest_not_after = min(c.not_valid_after_utc for c in (certificate, *self._chain))

    @classmethod
    def create_self_signed(
        cls,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        common_name: str = DEFAULT_ROOT_COMMON_NAME,
        root_ttl: timedelta = DEFAULT_ROOT_TTL,
        clock: Clock = utc_now,
        key_factory: KeyFactory = ecdsa_p256,
    ) -> CertificateAuthority:
        """An in-memory CA with a fresh root (nothing is written; see ``state``)."""
        certificate, key = create_root(
            common_name=common_name, ttl=root_ttl, clock=clock, key_factory=key_factory
        )
        return cls(
            certificate, key, trust_domain=trust_domain, clock=clock, key_factory=key_factory
        )

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def signing_certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The certificates above the signing certificate, leaf-to-root."""
        return self._chain

    @property
    def is_intermediate(self) -> bool:
        return bool(self._chain)

    @property
    def trust_bundle_pem(self) -> bytes:
        """The root, in PEM: the SDS ``ROOTCA`` secret and a client's CA file."""
        return self._trust_bundle_pem

    def issue(
        self,
        spiffe_uri: str,
        *,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        key_factory: KeyFactory | None = None,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> IssuedIdentity:
        """A fresh certificate and key for ``spiffe_uri`` (in this CA's trust domain),
        with ``dns_names`` and ``ip_addresses`` as more SANs if given.

        The lifetime is ``ttl`` plus the backdating skew, cut short so that it
        never outlives the CA. Raises :class:`SpiffeIdError` for a malformed
        ID and :class:`CAError` for a foreign trust domain or an expired CA.
        """
        _check_ttl(ttl)
        parsed = parse_spiffe_id(spiffe_uri)
        if parsed.trust_domain != self._trust_domain:
            raise CAError(
                f"cannot issue {spiffe_uri}: this CA serves trust domain {self._trust_domain!r}"
            )
        now = aware_now(self._clock).replace(microsecond=0)
        if now >= self._latest_not_after:
            raise CAError(
                f"cannot issue {spiffe_uri}: the CA chain expired at {self._latest_not_after}"
            )
        key = _check_key((key_factory or self._key_factory)())
        leaf = build_workload_certificate(
            spiffe_uri=spiffe_uri,
            public_key=key.public_key(),
            issuer=self._certificate,
            issuer_key=self._key,
            not_before=now - _backdate(ttl),
            not_after=min(now + ttl, self._latest_not_after),
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        return IssuedIdentity(
            spiffe_id=spiffe_uri,
            cert_chain_pem=certificates_pem([leaf]) + self._served_chain_pem,
            private_key_pem=private_key_pem(key),
            trust_bundle_pem=self._trust_bundle_pem,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            serial=leaf.serial_number,
            certificate=leaf,
        )

    def issue_intermediate(
        self,
        common_name: str,
        *,
        ttl: timedelta = DEFAULT_INTERMEDIATE_TTL,
        key_factory: KeyFactory | None = None,
    ) -> IntermediateCA:
        """A CA signed by this one, for one control-plane replica: every
        replica's workloads then chain to the same root, and one replica's
        key can be retired alone. It may sign only workloads (path length 0),
        never outlives this CA, and this CA must be allowed to sign a CA."""
        _check_ttl(ttl)
        try:
            constraints = self._certificate.extensions.get_extension_for_class(
                x509.BasicConstraints
            ).value
        except x509.ExtensionNotFound:  # check_ca_material let it in: a CA all the same
            constraints = None
        if constraints is not None and constraints.path_length == 0:
            raise CAError(
                f"{self._certificate.subject.rfc4514_string()!r} has a path length of 0: "
                "it may sign workloads but not another CA; give the root"
            )
        now = aware_now(self._clock).replace(microsecond=0)
        if now >= self._latest_not_after:
            raise CAError(f"cannot issue a CA: the CA chain expired at {self._latest_not_after}")
        key = _check_key((key_factory or self._key_factory)())
        certificate = build_intermediate_certificate(
            key.public_key(),
            common_name=common_name,
            organization=ROOT_ORGANIZATION,
            issuer=self._certificate,
            issuer_key=self._key,
            not_before=now - _backdate(ttl),
            not_after=min(now + ttl, self._latest_not_after),
        )
        return IntermediateCA(certificate, key, (self._certificate, *self._chain))

    def issue_workload(
        self,
        namespace: str,
        service_account: str,
        *,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        key_factory: KeyFactory | None = None,
    ) -> IssuedIdentity:
        """:meth:`issue` for ``spiffe://<trust domain>/ns/<namespace>/sa/<service_account>``.

        Also the way to mint a client certificate for the mTLS xDS port's
        bootstrap: a proxy's xDS identity is its workload identity.
        """
        uri = spiffe_id(self._trust_domain, namespace, service_account)
        return self.issue(uri, ttl=ttl, key_factory=key_factory)

    def info(self) -> CAInfo:
        root = self._root
        return CAInfo(
            trust_domain=self._trust_domain,
            root_subject=root.subject.rfc4514_string(),
            root_fingerprint_sha256=sha256_fingerprint(root),
            root_serial=root.serial_number,
            root_not_before=root.not_valid_before_utc,
            root_not_after=root.not_valid_after_utc,
            signing_subject=self._certificate.subject.rfc4514_string(),
            signing_not_after=self._certificate.not_valid_after_utc,
            intermediate=self.is_intermediate,
        )

    def __repr__(self) -> str:
        return (
            f"CertificateAuthority(trust_domain={self._trust_domain!r}, "
            f"signing={self._certificate.subject.rfc4514_string()!r}, "
            f"intermediate={self.is_intermediate})"
        )
