"""One root, a CA per control-plane replica (#22): `sailplane ca intermediate`
signs a CA that `serve --ca-dir` loads, and workloads of two replicas trust
each other through the shared root, in a real TLS handshake."""

from __future__ import annotations

import dataclasses
import ssl
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from sailplane.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_CHAIN_FILE,
    ROOT_CERT_FILE,
    CAError,
    CertificateAuthority,
    ManualClock,
    load_or_create_authority,
    write_intermediate,
)
from sailplane.cli import main
from tests.unit.test_ca import API, WEB, handshake


def replica(root: CertificateAuthority, name: str, directory: Path) -> CertificateAuthority:
    """What `ca intermediate NAME --out-dir DIR` then `serve --ca-dir DIR` do."""
    write_intermediate(directory, root.issue_intermediate(name))
    return load_or_create_authority(directory)


def test_a_replica_ca_chains_to_the_root_and_signs_workloads(tmp_path: Path) -> None:
    root = CertificateAuthority.create_self_signed()
    ca = replica(root, "replica-a", tmp_path / "a")
    assert ca.is_intermediate
    assert ca.root_certificate == root.root_certificate
    assert ca.trust_bundle_pem == root.trust_bundle_pem  # proxies keep one ROOTCA
    assert ca.signing_certificate.subject.rfc4514_string() == "CN=replica-a,O=sailplane"
    constraints = ca.signing_certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0

    identity = ca.issue(API)
    leaf, *served = x509.load_pem_x509_certificates(identity.cert_chain_pem)
    assert served == [ca.signing_certificate, root.root_certificate]
    verifier = PolicyBuilder().store(Store([root.root_certificate])).build_client_verifier()
    verified = verifier.verify(leaf, served)
    assert [c.subject for c in verified.chain] == [
        leaf.subject,
        ca.signing_certificate.subject,
        root.root_certificate.subject,
    ]


def test_workloads_of_two_replicas_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    root = CertificateAuthority.create_self_signed()
    a = replica(root, "replica-a", tmp_path / "a")
    b = replica(root, "replica-b", tmp_path / "b")
    seen = handshake(a.issue(API), b.issue(WEB), tmp_path)
    assert seen == {"server_id": API, "client_id": WEB, "echo": b"ping"}


def test_a_replica_of_another_root_is_refused(tmp_path: Path) -> None:
    root = CertificateAuthority.create_self_signed()
    stranger = replica(CertificateAuthority.create_self_signed(), "intruder", tmp_path / "x")
    ours = replica(root, "replica-a", tmp_path / "a")
    # The intruder's workload trusts our root, so only its own certificate can fail.
    client = dataclasses.replace(stranger.issue(WEB), trust_bundle_pem=root.trust_bundle_pem)
    seen = handshake(ours.issue(API), client, tmp_path, send=False)
    assert isinstance(seen["server_error"], ssl.SSLError)
    assert "certificate verify failed" in str(seen["server_error"])
    assert "client_id" not in seen


def test_a_replica_ca_cannot_sign_another_ca(tmp_path: Path) -> None:
    ca = replica(CertificateAuthority.create_self_signed(), "replica-a", tmp_path / "a")
    with pytest.raises(CAError, match="path length of 0"):
        ca.issue_intermediate("replica-a-prime")


def test_the_intermediate_never_outlives_its_root() -> None:
    clock = ManualClock()
    root = CertificateAuthority.create_self_signed(root_ttl=timedelta(days=30), clock=clock)
    intermediate = root.issue_intermediate("replica-a", ttl=timedelta(days=365))
    assert intermediate.certificate.not_valid_after_utc == root.root_certificate.not_valid_after_utc


def test_files_and_modes_and_no_overwrite(tmp_path: Path) -> None:
    root = CertificateAuthority.create_self_signed()
    out = tmp_path / "a"
    write_intermediate(out, root.issue_intermediate("replica-a"))
    for name in (CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE):
        assert (out / name).is_file()
    assert stat.S_IMODE((out / CA_KEY_FILE).stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificate((out / ROOT_CERT_FILE).read_bytes()) == (
        root.root_certificate
    )
    key_before = (out / CA_KEY_FILE).read_bytes()
    with pytest.raises(CAError, match="already there"):
        write_intermediate(out, root.issue_intermediate("replica-a"))
    assert (out / CA_KEY_FILE).read_bytes() == key_before


def test_cli_writes_a_replica_ca_that_ca_show_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root_dir, out = tmp_path / "root", tmp_path / "replica-b"
    assert main(["ca", "init", "--ca-dir", str(root_dir)]) == 0
    capsys.readouterr()
    args = ["ca", "intermediate", "replica-b", "--ca-dir", str(root_dir), "--out-dir", str(out)]
    assert main([*args, "--ttl", "720h"]) == 0
    said = capsys.readouterr().out
    assert "CN=replica-b,O=sailplane signed by" in said and f"serve --ca-dir {out}" in said
    assert main(["ca", "show", "--ca-dir", str(out)]) == 0
    shown = capsys.readouterr().out
    root_shown = main(["ca", "show", "--ca-dir", str(root_dir)]) == 0 and capsys.readouterr().out
    assert "signing      CN=replica-b,O=sailplane" in shown
    # Same root fingerprint: the replica's proxies trust the root's.
    fingerprint = [line for line in shown.splitlines() if line.startswith("fingerprint")]
    assert root_shown and fingerprint and fingerprint[0] in root_shown
    # A second run into the same directory is refused and changes nothing.
    assert main(args) == 1
    assert "already there" in capsys.readouterr().err
    # --keep-existing (a one-shot at every start): kept, exit 0, nothing rewritten ...
    key_before = (out / CA_KEY_FILE).read_bytes()
    assert main([*args, "--keep-existing"]) == 0
    assert f"kept (already in {out})" in capsys.readouterr().out
    assert (out / CA_KEY_FILE).read_bytes() == key_before
    # ... unless it is of another root, or not a usable CA.
    other = tmp_path / "other-root"
    assert main(["ca", "init", "--ca-dir", str(other)]) == 0
    capsys.readouterr()
    keep_other = ["ca", "intermediate", "b", "--ca-dir", str(other), "--out-dir", str(out)]
    assert main([*keep_other, "--keep-existing"]) == 1
    assert "another root" in capsys.readouterr().err
    (out / CA_KEY_FILE).write_text("not a key")
    assert main([*args, "--keep-existing"]) == 1
    assert str(out / CA_KEY_FILE) in capsys.readouterr().err
    # An empty directory gets a new one, as without the flag.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fresh_args = ["ca", "intermediate", "c", "--ca-dir", str(root_dir), "--out-dir", str(fresh)]
    assert main([*fresh_args, "--keep-existing"]) == 0
    assert (fresh / CA_CERT_FILE).is_file()
