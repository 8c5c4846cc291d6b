"""sailplane's certificate authority: SPIFFE workload certificates for mTLS.

The CA mints the certificates that reach Envoy as SDS secrets ``default``
(leaf + chain + key) and ``ROOTCA`` (the trust bundle). Identities are
Istio's: ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``.

Getting a CA::

    ca = load_or_create_authority(Path("/var/lib/sailplane/ca"))   # self-signed root on
                                                                   # first start, reused after
    ca = load_authority(cert_file, key_file, chain_file)           # a user's root or intermediate
    ca = CertificateAuthority.create_self_signed()                 # in memory (tests)

Issuing and rotating::

    store = IdentityStore(ca)                     # one cert per identity, 24 h, rotated at 50 %
    ident = store.get_workload("default", "weather-backend")
    ident.cert_chain_pem, ident.private_key_pem   # -> SDS "default"
    ident.trust_bundle_pem                        # -> SDS "ROOTCA" (== ca.trust_bundle_pem)
    store.next_rotation()                         # when to wake up
    store.rotate_due()                            # -> SPIFFE IDs whose secrets changed

    write_identity(ca.issue(uri), cert_file, key_file, bundle_file)   # a non-Envoy client
    write_intermediate(Path("replica-a"), ca.issue_intermediate("replica-a"))  # a replica's CA

Checking a peer (the mTLS xDS port)::

    parse_spiffe_id(identity_of_certificate(peer_pem))   # -> SpiffeId(td, ns, sa)

``ca.info()`` gives what ``sailplane ca show`` prints (root SHA-256
fingerprint, subject, validity).

Boundaries are injected: a CA takes a ``clock`` (a :data:`Clock`;
:class:`ManualClock` for tests), which its :class:`IdentityStore` shares, and a
``key_factory`` (:func:`ecdsa_p256` by default, :func:`rsa_2048`; the store and
``issue`` may override it), so expiry and rotation are tested without sleeping.

Errors are :class:`CAError` (a ``SailplaneError``), prefixed with the file at
fault; malformed SPIFFE IDs raise :class:`SpiffeIdError`, also a ``ValueError``.
Private keys never appear in a ``repr``.

May import only ``sailplane.errors``: the CA stands alone.
"""

from sailplane.ca.authority import (
    CLOCK_SKEW,
    DEFAULT_INTERMEDIATE_TTL,
    DEFAULT_ROOT_COMMON_NAME,
    DEFAULT_ROOT_TTL,
    DEFAULT_WORKLOAD_TTL,
    CAInfo,
    CertificateAuthority,
    IntermediateCA,
    create_root,
)
from sailplane.ca.certs import sha256_fingerprint
from sailplane.ca.clock import Clock, ManualClock, utc_now
from sailplane.ca.identity import ROTATION_FRACTION, IssuedIdentity, write_identity
from sailplane.ca.keys import KEY_FACTORIES, KeyFactory, PrivateKey, ecdsa_p256, rsa_2048
from sailplane.ca.spiffe import (
    DEFAULT_TRUST_DOMAIN,
    SpiffeId,
    identity_of_certificate,
    parse_spiffe_id,
    spiffe_id,
)
from sailplane.ca.state import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_CHAIN_FILE,
    ROOT_CERT_FILE,
    load_authority,
    load_or_create_authority,
    write_intermediate,
)
from sailplane.ca.store import IdentityStore
from sailplane.errors import CAError, SpiffeIdError

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CERT_CHAIN_FILE",
    "CLOCK_SKEW",
    "DEFAULT_INTERMEDIATE_TTL",
    "DEFAULT_ROOT_COMMON_NAME",
    "DEFAULT_ROOT_TTL",
    "DEFAULT_TRUST_DOMAIN",
    "DEFAULT_WORKLOAD_TTL",
    "KEY_FACTORIES",
    "ROOT_CERT_FILE",
    "ROTATION_FRACTION",
    "CAError",
    "CAInfo",
    "CertificateAuthority",
    "Clock",
    "IdentityStore",
    "IntermediateCA",
    "IssuedIdentity",
    "KeyFactory",
    "ManualClock",
    "PrivateKey",
    "SpiffeId",
    "SpiffeIdError",
    "create_root",
    "ecdsa_p256",
    "identity_of_certificate",
    "load_authority",
    "load_or_create_authority",
    "parse_spiffe_id",
    "rsa_2048",
    "sha256_fingerprint",
    "spiffe_id",
    "utc_now",
    "write_identity",
    "write_intermediate",
]
