"""One current certificate per workload identity, rotated at half its lifetime.

Two proxies of the same service account share one certificate until it is
due, as Istio's SDS does per identity; that keeps the number of signatures
proportional to identities, not to proxies. A scheduler uses it like this::

    while True:
        due = store.next_rotation()
        await asyncio.sleep(max(0.0, (due - clock()).total_seconds()) if due else 3600)
        for spiffe_id in store.rotate_due():
            push_sds_secret(spiffe_id)   # proxies of that identity get the new cert
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

from sailplane.ca.authority import DEFAULT_WORKLOAD_TTL, CertificateAuthority
from sailplane.ca.clock import aware_now
from sailplane.ca.identity import ROTATION_FRACTION, IssuedIdentity
from sailplane.ca.keys import KeyFactory
from sailplane.ca.spiffe import spiffe_id


class IdentityStore:
    """Caches one :class:`IssuedIdentity` per SPIFFE ID and re-issues it when due.

    Time comes from the authority's clock, so certificate times and rotation
    decisions agree. Safe to call from several threads.
    """

    def __init__(
        self,
        authority: CertificateAuthority,
        *,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        rotation_fraction: float = ROTATION_FRACTION,
        key_factory: KeyFactory | None = None,
    ) -> None:
        if not 0.0 < rotation_fraction <= 1.0:
            raise ValueError(f"rotation_fraction must be in (0, 1], got {rotation_fraction}")
        self._authority = authority
        self._ttl = ttl
        self._fraction = rotation_fraction
        self._key_factory = key_factory
        self._lock = threading.Lock()
        self._identities: dict[str, IssuedIdentity] = {}
        # SPIFFE ID -> (DNS names, IP addresses): more SANs for a server's certificate.
        self._hostnames: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    @property
    def authority(self) -> CertificateAuthority:
        return self._authority

    def _issue(self, uri: str) -> IssuedIdentity:
        dns_names, ip_addresses = self._hostnames.get(uri, ((), ()))
        issued = self._authority.issue(
            uri,
            ttl=self._ttl,
            key_factory=self._key_factory,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        self._identities[uri] = issued
        return issued

    def set_hostnames(
        self, spiffe_uri: str, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()
    ) -> None:
        """Every certificate of ``spiffe_uri`` from now on also names these
        (a server that clients check by hostname); one issued before with
        other names is re-issued on the next :meth:`get`."""
        names = (tuple(dns_names), tuple(ip_addresses))
        with self._lock:
            if self._hostnames.get(spiffe_uri, ((), ())) != names:
                self._hostnames[spiffe_uri] = names
                self._identities.pop(spiffe_uri, None)

    def get(self, spiffe_uri: str) -> IssuedIdentity:
        """The current certificate of ``spiffe_uri``, issued now if missing or due.

        Never returns a certificate that is expired or not yet valid.
        """
        with self._lock:
            now = aware_now(self._authority.clock)
            current = self._identities.get(spiffe_uri)
            if current is None or current.needs_rotation(now, self._fraction):
                return self._issue(spiffe_uri)
            return current

    def get_workload(self, namespace: str, service_account: str) -> IssuedIdentity:
        """:meth:`get` for a namespace and service account in the CA's trust domain."""
        return self.get(spiffe_id(self._authority.trust_domain, namespace, service_account))

    def peek(self, spiffe_uri: str) -> IssuedIdentity | None:
        """The cached certificate, if any, without issuing or rotating."""
        with self._lock:
            return self._identities.get(spiffe_uri)

    def forget(self, spiffe_uri: str) -> None:
        """Drop an identity that no proxy uses any more, so it is not rotated."""
        with self._lock:
            self._identities.pop(spiffe_uri, None)

    def identities(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._identities))

    def next_rotation(self) -> datetime | None:
        """The earliest instant a cached certificate is due, or None if none is cached."""
        with self._lock:
            times = [i.rotation_time(self._fraction) for i in self._identities.values()]
        return min(times, default=None)

    def rotate_due(self, now: datetime | None = None) -> tuple[str, ...]:
        """Re-issue every certificate due at ``now`` (default: the clock); return
        their SPIFFE IDs, sorted, so the caller can push the new secrets."""
        with self._lock:
            at = now if now is not None else aware_now(self._authority.clock)
            due = sorted(
                u for u, i in self._identities.items() if i.needs_rotation(at, self._fraction)
            )
            for uri in due:
                self._issue(uri)
        return tuple(due)

    def __len__(self) -> int:
        with self._lock:
            return len(self._identities)
