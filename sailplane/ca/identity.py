"""An issued workload identity: the value SDS serves and a client writes to disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from sailplane.ca.pemfiles import PUBLIC_MODE, write_file, write_secret_file

ROTATION_FRACTION = 0.5
"""Re-issue once this fraction of a certificate's lifetime has passed (Istio's default)."""


@dataclass(frozen=True, slots=True)
class IssuedIdentity:
    """One workload certificate with its key, ready for an SDS ``default`` secret.

    ``cert_chain_pem`` is the leaf followed by the CA's chain (for an
    intermediate CA: the intermediate(s) and the root, as Istio serves them;
    for a self-signed root CA: the leaf alone, the root being in the trust
    bundle). ``trust_bundle_pem`` is the root, the SDS ``ROOTCA`` secret.
    The private key is kept out of ``repr``/``str`` so it never reaches a log.
    """

    spiffe_id: str
    cert_chain_pem: bytes = field(repr=False)
    private_key_pem: bytes = field(repr=False)
    trust_bundle_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime
    serial: int
    certificate: x509.Certificate = field(repr=False, compare=False)

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before

    def rotation_time(self, fraction: float = ROTATION_FRACTION) -> datetime:
        """When this certificate should be replaced: ``fraction`` into its lifetime."""
        return self.not_before + self.lifetime * fraction

    def needs_rotation(self, now: datetime, fraction: float = ROTATION_FRACTION) -> bool:
        """True once ``fraction`` of the lifetime has passed, and also before
        ``not_before`` (the clock went back), so an unusable cert is never kept."""
        return now >= self.rotation_time(fraction) or now < self.not_before

    def is_valid_at(self, now: datetime) -> bool:
        return self.not_before <= now < self.not_after


def write_identity(
    identity: IssuedIdentity,
    cert_file: Path,
    key_file: Path,
    bundle_file: Path | None = None,
) -> None:
    """Write an identity for a non-Envoy client: chain (0644), key (0600),
    optionally the trust bundle (0644). The key is written first so a reader
    that sees the new certificate also sees its key."""
    write_secret_file(key_file, identity.private_key_pem)
    write_file(cert_file, identity.cert_chain_pem, mode=PUBLIC_MODE)
    if bundle_file is not None:
        write_file(bundle_file, identity.trust_bundle_pem, mode=PUBLIC_MODE)
