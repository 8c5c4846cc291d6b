"""The CA on disk: a state directory, or a user's own CA files.

The state directory uses Istio's "plugged-in CA" file names, so an Istio
``cacerts`` directory can be dropped in as is::

    ca-cert.pem     the signing certificate (the root, or a user's intermediate)
    ca-key.pem      its private key, mode 0600
    cert-chain.pem  optional: the certificates above ca-cert.pem up to the root
                    (a leading copy of ca-cert.pem, as Istio writes it, is fine)
    root-cert.pem   written by ``sailplane ca intermediate`` for other tools
                    (Istio's name); sailplane itself reads the root from the chain

``ca-cert.pem`` marks an initialised directory: without it a new root is
created (and any stale key replaced); with it the directory is only read, so
a missing or mismatched key is an error, never a silent new root.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sailplane.ca.authority import (
    DEFAULT_ROOT_COMMON_NAME,
    DEFAULT_ROOT_TTL,
    CertificateAuthority,
    IntermediateCA,
    create_root,
)
from sailplane.ca.certs import check_ca_material
from sailplane.ca.clock import Clock, aware_now, utc_now
from sailplane.ca.keys import KeyFactory, ecdsa_p256, private_key_pem
from sailplane.ca.pemfiles import (
    PUBLIC_MODE,
    certificates_pem,
    load_certificates,
    load_private_key,
    write_file,
    write_secret_file,
)
from sailplane.ca.spiffe import DEFAULT_TRUST_DOMAIN
from sailplane.errors import CAError

CA_CERT_FILE = "ca-cert.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_CHAIN_FILE = "cert-chain.pem"
ROOT_CERT_FILE = "root-cert.pem"


def load_authority(
    cert_file: Path,
    key_file: Path,
    chain_file: Path | None = None,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    clock: Clock = utc_now,
    key_factory: KeyFactory = ecdsa_p256,
) -> CertificateAuthority:
    """A CA from a user's files: a root, or an intermediate with its chain.

    The chain may follow the CA certificate in ``cert_file`` or come from
    ``chain_file``. Every problem raises :class:`CAError` naming the file.
    """
    certificate, *bundled = load_certificates(cert_file)
    key = load_private_key(key_file)
    chain = bundled + (load_certificates(chain_file) if chain_file is not None else [])
    # Checked here first so that errors name the files, not generic labels.
    check_ca_material(
        certificate,
        key,
        chain,
        now=aware_now(clock),
        cert_source=str(cert_file),
        key_source=str(key_file),
        chain_source=str(chain_file if chain_file is not None else cert_file),
    )
    return CertificateAuthority(
        certificate, key, chain, trust_domain=trust_domain, clock=clock, key_factory=key_factory
    )


def load_or_create_authority(
    state_dir: Path,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    common_name: str = DEFAULT_ROOT_COMMON_NAME,
    root_ttl: timedelta = DEFAULT_ROOT_TTL,
    clock: Clock = utc_now,
    key_factory: KeyFactory = ecdsa_p256,
) -> CertificateAuthority:
    """Reuse the CA in ``state_dir``, or create a self-signed root there on first start.

    ``common_name`` and ``root_ttl`` only matter when a root is created.
    """
    cert_file = state_dir / CA_CERT_FILE
    key_file = state_dir / CA_KEY_FILE
    chain_file = state_dir / CERT_CHAIN_FILE
    if cert_file.exists():
        return load_authority(
            cert_file,
            key_file,
            chain_file if chain_file.exists() else None,
            trust_domain=trust_domain,
            clock=clock,
            key_factory=key_factory,
        )
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CAError(
            f"cannot create the CA state directory: {e.strerror or e}", source=state_dir
        ) from e
    certificate, key = create_root(
        common_name=common_name, ttl=root_ttl, clock=clock, key_factory=key_factory
    )
    # Key first: ca-cert.pem is the "initialised" marker and must never exist without it.
    write_secret_file(key_file, private_key_pem(key))
    write_file(cert_file, certificates_pem([certificate]), mode=PUBLIC_MODE)
    return CertificateAuthority(
        certificate, key, trust_domain=trust_domain, clock=clock, key_factory=key_factory
    )


def write_intermediate(state_dir: Path, intermediate: IntermediateCA) -> None:
    """Write ``intermediate`` as a CA state directory that ``serve --ca-dir``
    reads. Refuses a directory that already holds a CA: a replica's key is
    never replaced behind its back."""
    cert_file = state_dir / CA_CERT_FILE
    if cert_file.exists() or (state_dir / CA_KEY_FILE).exists():
        raise CAError("a CA is already there; choose an empty directory", source=state_dir)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CAError(f"cannot create the directory: {e.strerror or e}", source=state_dir) from e
    write_secret_file(state_dir / CA_KEY_FILE, private_key_pem(intermediate.key))
    write_file(state_dir / CERT_CHAIN_FILE, certificates_pem(intermediate.chain), mode=PUBLIC_MODE)
    write_file(
        state_dir / ROOT_CERT_FILE, certificates_pem(intermediate.chain[-1:]), mode=PUBLIC_MODE
    )
    # Last: ca-cert.pem marks the directory as initialised (see the module's docstring).
    write_file(cert_file, certificates_pem([intermediate.certificate]), mode=PUBLIC_MODE)
