from __future__ import annotations

import dataclasses
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from sailplane.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_CHAIN_FILE,
    CLOCK_SKEW,
    DEFAULT_WORKLOAD_TTL,
    CAError,
    CertificateAuthority,
    IdentityStore,
    IssuedIdentity,
    ManualClock,
    PrivateKey,
    SpiffeId,
    SpiffeIdError,
    create_root,
    ecdsa_p256,
    identity_of_certificate,
    load_authority,
    load_or_create_authority,
    parse_spiffe_id,
    rsa_2048,
    spiffe_id,
    write_identity,
)
from sailplane.errors import SailplaneError

START = datetime(2030, 1, 1, tzinfo=UTC)
WEB = "spiffe://cluster.local/ns/default/sa/web"
API = "spiffe://cluster.local/ns/default/sa/api"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def ca(clock: ManualClock) -> CertificateAuthority:
    return CertificateAuthority.create_self_signed(clock=clock)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_intermediate(
    root: x509.Certificate, root_key: PrivateKey, now: datetime
) -> tuple[x509.Certificate, PrivateKey]:
    """What a user's PKI would hand over: an intermediate signed by their root."""
    key = ecdsa_p256()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "team intermediate")])
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    return cert, key


def verify_client(
    identity: IssuedIdentity, roots: list[x509.Certificate], at: datetime
) -> list[x509.Certificate]:
    """Path validation by cryptography's WebPKI verifier (as a TLS server checks a client)."""
    chain = x509.load_pem_x509_certificates(identity.cert_chain_pem)
    verifier = PolicyBuilder().store(Store(roots)).time(at).build_client_verifier()
    verified = verifier.verify(chain[0], chain[1:])
    assert verified.subjects == [x509.UniformResourceIdentifier(identity.spiffe_id)]
    return verified.chain


# --- root and state directory -------------------------------------------------------------


def test_root_created_once_with_0600_key_and_reused(tmp_path: Path, clock: ManualClock) -> None:
    state = tmp_path / "state"
    first = load_or_create_authority(state, clock=clock, common_name="mesh root")
    key_file = state / CA_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    key_bytes, cert_bytes = key_file.read_bytes(), (state / CA_CERT_FILE).read_bytes()

    clock.advance(timedelta(days=30))
    second = load_or_create_authority(state, clock=clock, common_name="ignored on reuse")
    assert second.info().root_fingerprint_sha256 == first.info().root_fingerprint_sha256
    assert (key_file.read_bytes(), (state / CA_CERT_FILE).read_bytes()) == (key_bytes, cert_bytes)
    # A cert from the reloaded CA chains to the original root.
    verify_client(second.issue(WEB), [first.root_certificate], clock())


def test_root_certificate_profile(ca: CertificateAuthority, clock: ManualClock) -> None:
    root = ca.root_certificate
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "sailplane"
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sailplane root CA"
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert timedelta(days=3649) < root.not_valid_after_utc - clock() <= timedelta(days=3650)
    assert ca.trust_bundle_pem == pem(root)
    assert not ca.is_intermediate


def test_info_for_ca_show(ca: CertificateAuthority) -> None:
    info = ca.info()
    expected = ca.root_certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert info.root_fingerprint_sha256.replace(":", "") == expected
    assert len(info.root_fingerprint_sha256.split(":")) == 32
    assert info.root_subject == "CN=sailplane root CA,O=sailplane"
    assert info.root_not_after == ca.root_certificate.not_valid_after_utc
    assert info.signing_subject == info.root_subject
    assert not info.intermediate


# --- workload certificates ------------------------------------------------------------------


def test_workload_certificate_verifies_and_has_spiffe_profile(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    issued = ca.issue_workload("default", "web")
    assert issued.spiffe_id == WEB
    chain = verify_client(issued, [ca.root_certificate], clock())
    assert chain[-1] == ca.root_certificate

    leaf = issued.certificate
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty (RFC 5280 4.2.1.6)
    assert list(san.value) == [x509.UniformResourceIdentifier(WEB)]
    assert leaf.subject == x509.Name([])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ca.root_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == root_ski.value.digest
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())

    assert issued.not_before == clock() - CLOCK_SKEW
    assert issued.not_after == clock() + DEFAULT_WORKLOAD_TTL
    assert issued.serial == leaf.serial_number
    assert x509.load_pem_x509_certificates(issued.cert_chain_pem) == [leaf]  # root CA: leaf only
    assert issued.trust_bundle_pem == ca.trust_bundle_pem


@pytest.mark.parametrize(
    ("factory", "key_type", "key_encipherment"),
    [(ecdsa_p256, ec.EllipticCurvePrivateKey, False), (rsa_2048, rsa.RSAPrivateKey, True)],
    ids=["ecdsa-p256", "rsa-2048"],
)
def test_key_factory_chooses_workload_key_type(
    ca: CertificateAuthority, factory: object, key_type: type, key_encipherment: bool
) -> None:
    issued = ca.issue(WEB, key_factory=factory)  # type: ignore[arg-type]
    key = serialization.load_pem_private_key(issued.private_key_pem, password=None)
    assert isinstance(key, key_type)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == 2048
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
    assert b"BEGIN PRIVATE KEY" in issued.private_key_pem  # PKCS#8
    usage = issued.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment is key_encipherment


def test_short_lifetime_backdates_at_most_a_tenth(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    issued = ca.issue(WEB, ttl=timedelta(minutes=10))
    assert issued.not_before == clock() - timedelta(minutes=1)
    assert issued.not_after == clock() + timedelta(minutes=10)


def test_leaf_never_outlives_the_ca(clock: ManualClock) -> None:
    ca = CertificateAuthority.create_self_signed(clock=clock, root_ttl=timedelta(hours=1))
    issued = ca.issue(WEB)
    assert issued.not_after == ca.root_certificate.not_valid_after_utc
    clock.advance(timedelta(hours=2))
    with pytest.raises(CAError, match="expired"):
        ca.issue(WEB)


@pytest.mark.parametrize(
    "uri",
    ["spiffe://other.domain/ns/default/sa/web", "spiffe://cluster.local/ns/default/sa/a/b", "web"],
    ids=["foreign-trust-domain", "extra-segments", "not-a-uri"],
)
def test_issue_rejects_bad_identities(ca: CertificateAuthority, uri: str) -> None:
    with pytest.raises(CAError):
        ca.issue(uri)


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CertificateAuthority.create_self_signed(clock=lambda: datetime(2030, 1, 1))


def test_repr_and_str_never_show_keys(ca: CertificateAuthority) -> None:
    issued = ca.issue(WEB)
    for text in (repr(issued), str(issued), repr(ca), str(ca), repr(ca.info())):
        assert "PRIVATE KEY" not in text
        assert "BEGIN" not in text
    assert WEB in repr(issued)


# --- rotation -------------------------------------------------------------------------------


def test_one_certificate_per_identity_rotated_at_half_life(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    store = IdentityStore(ca)
    first = store.get(WEB)
    assert store.get(WEB) is first  # two proxies of one identity share the cert
    half_life = first.not_before + (first.not_after - first.not_before) / 2
    assert store.next_rotation() == half_life

    clock.now = half_life - timedelta(seconds=1)
    assert store.get(WEB) is first
    assert store.rotate_due() == ()

    clock.now = half_life
    rotated = store.get(WEB)
    assert rotated.serial != first.serial
    assert rotated.not_before == half_life - CLOCK_SKEW
    assert store.get(WEB) is rotated


@pytest.mark.parametrize("fraction", [0.5, 1.0], ids=["half", "full-lifetime"])
def test_expired_certificates_are_never_returned(
    ca: CertificateAuthority, clock: ManualClock, fraction: float
) -> None:
    store = IdentityStore(ca, rotation_fraction=fraction, ttl=timedelta(hours=1))
    old = store.get(WEB)
    clock.now = old.not_after
    fresh = store.get(WEB)
    assert fresh.serial != old.serial
    assert fresh.is_valid_at(clock())
    clock.now = old.not_before - timedelta(seconds=1)  # the clock went back
    assert store.get(WEB).is_valid_at(clock())


def test_rotate_due_reissues_only_due_identities(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    store = IdentityStore(ca, ttl=timedelta(hours=2))
    assert store.next_rotation() is None
    web = store.get(WEB)
    clock.advance(timedelta(minutes=30))
    api = store.get_workload("default", "api")
    assert store.identities() == (API, WEB)
    assert store.next_rotation() == web.rotation_time()

    assert store.rotate_due(web.rotation_time()) == (WEB,)
    assert store.peek(API) is api
    new_web = store.peek(WEB)
    assert new_web is not None and new_web.serial != web.serial
    assert store.next_rotation() == api.rotation_time()

    store.forget(API)
    assert len(store) == 1
    assert store.rotate_due(api.rotation_time() + timedelta(days=1)) == (WEB,)


def test_rotation_fraction_must_be_a_fraction(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="rotation_fraction"):
        IdentityStore(ca, rotation_fraction=0.0)


# --- user-supplied CA files -----------------------------------------------------------------


def write_user_pki(
    tmp_path: Path, clock: ManualClock
) -> tuple[Path, x509.Certificate, x509.Certificate]:
    root, root_key = create_root(clock=clock, common_name="corp root")
    intermediate, key = make_intermediate(root, root_key, clock())
    (tmp_path / "ca-cert.pem").write_bytes(pem(intermediate))
    (tmp_path / "ca-key.pem").write_bytes(key_pem(key))
    (tmp_path / "cert-chain.pem").write_bytes(pem(intermediate, root))  # Istio's layout
    return tmp_path, root, intermediate


def test_intermediate_from_user_files_signs_leaves_and_is_served(
    tmp_path: Path, clock: ManualClock
) -> None:
    pki, root, intermediate = write_user_pki(tmp_path, clock)
    ca = load_authority(
        pki / "ca-cert.pem", pki / "ca-key.pem", pki / "cert-chain.pem", clock=clock
    )
    assert ca.is_intermediate and ca.chain == (root,)
    assert ca.trust_bundle_pem == pem(root)
    info = ca.info()
    assert info.intermediate and info.signing_subject == "CN=team intermediate"

    issued = ca.issue(WEB)
    assert issued.certificate.issuer == intermediate.subject
    served = x509.load_pem_x509_certificates(issued.cert_chain_pem)
    assert served == [issued.certificate, intermediate, root]
    assert verify_client(issued, [root], clock()) == [issued.certificate, intermediate, root]
    assert issued.trust_bundle_pem == pem(root)


def test_state_dir_with_plugged_in_ca_is_used_not_replaced(
    tmp_path: Path, clock: ManualClock
) -> None:
    pki, root, intermediate = write_user_pki(tmp_path, clock)
    ca = load_or_create_authority(pki, clock=clock)
    assert ca.signing_certificate == intermediate and ca.root_certificate == root


def test_chain_may_follow_the_ca_cert_in_one_file(tmp_path: Path, clock: ManualClock) -> None:
    pki, root, intermediate = write_user_pki(tmp_path, clock)
    bundle = pki / "bundle.pem"
    bundle.write_bytes(pem(intermediate, root))
    assert load_authority(bundle, pki / "ca-key.pem", clock=clock).chain == (root,)


@pytest.mark.parametrize(
    ("case", "bad_file", "message"),
    [
        ("mismatched-key", "ca-key.pem", "does not match"),
        ("missing-key", "ca-key.pem", "cannot read"),
        ("garbage-cert", "ca-cert.pem", "no PEM certificate"),
        ("garbage-key", "ca-key.pem", "not a readable PEM private key"),
        ("not-a-ca", "ca-cert.pem", "not a CA certificate"),
        ("intermediate-without-chain", "ca-cert.pem", "give its chain"),
        ("chain-from-other-root", "cert-chain.pem", "not signed by"),
        ("encrypted-key", "ca-key.pem", "encrypted"),
    ],
)
def test_bad_ca_files_raise_errors_naming_the_file(
    tmp_path: Path, clock: ManualClock, case: str, bad_file: str, message: str
) -> None:
    pki, _, _ = write_user_pki(tmp_path, clock)
    chain: Path | None = pki / "cert-chain.pem"
    if case == "mismatched-key":
        (pki / "ca-key.pem").write_bytes(key_pem(ecdsa_p256()))
    elif case == "missing-key":
        (pki / "ca-key.pem").unlink()
    elif case == "garbage-cert":
        (pki / "ca-cert.pem").write_text("hello\n")
    elif case == "garbage-key":
        (pki / "ca-key.pem").write_text(
            "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n"
        )
    elif case == "not-a-ca":
        leaf = CertificateAuthority.create_self_signed(clock=clock).issue(WEB)
        (pki / "ca-cert.pem").write_bytes(leaf.cert_chain_pem)
        (pki / "ca-key.pem").write_bytes(leaf.private_key_pem)
    elif case == "intermediate-without-chain":
        chain = None
    elif case == "chain-from-other-root":
        (pki / "cert-chain.pem").write_bytes(pem(create_root(clock=clock)[0]))
    elif case == "encrypted-key":
        key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        (pki / "ca-key.pem").write_bytes(encrypted)
    with pytest.raises(CAError, match=message) as raised:
        load_authority(pki / "ca-cert.pem", pki / "ca-key.pem", chain, clock=clock)
    assert raised.value.source == str(pki / bad_file)
    assert str(raised.value).startswith(f"{pki / bad_file}: ")
    assert isinstance(raised.value, SailplaneError)


def test_initialised_state_dir_without_key_is_an_error(tmp_path: Path, clock: ManualClock) -> None:
    load_or_create_authority(tmp_path, clock=clock)
    (tmp_path / CA_KEY_FILE).unlink()
    with pytest.raises(CAError, match=CA_KEY_FILE):
        load_or_create_authority(tmp_path, clock=clock)
    assert not (tmp_path / CERT_CHAIN_FILE).exists()


def test_expired_user_ca_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    pki, _, _ = write_user_pki(tmp_path, clock)
    clock.advance(timedelta(days=400))  # past the intermediate's year
    with pytest.raises(CAError, match="expired") as raised:
        load_authority(pki / "ca-cert.pem", pki / "ca-key.pem", pki / "cert-chain.pem", clock=clock)
    assert raised.value.source == str(pki / "ca-cert.pem")


# --- files for non-Envoy clients ------------------------------------------------------------


def test_write_identity_creates_key_0600_even_over_a_public_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert_file, key_file, bundle_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "r.pem"
    key_file.write_text("old")
    key_file.chmod(0o644)
    issued = ca.issue(WEB)
    write_identity(issued, cert_file, key_file, bundle_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes() == issued.private_key_pem
    assert cert_file.read_bytes() == issued.cert_chain_pem
    assert bundle_file.read_bytes() == ca.trust_bundle_pem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem", "r.pem"]


def test_write_to_missing_directory_names_the_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    key_file = tmp_path / "nope" / "k.pem"
    with pytest.raises(CAError, match="cannot write") as raised:
        write_identity(ca.issue(WEB), tmp_path / "c.pem", key_file)
    assert raised.value.source == str(key_file)


# --- SPIFFE IDs -----------------------------------------------------------------------------


def test_spiffe_id_round_trip() -> None:
    uri = spiffe_id("cluster.local", "default", "weather-backend")
    assert uri == "spiffe://cluster.local/ns/default/sa/weather-backend"
    parsed = parse_spiffe_id(uri)
    assert parsed == SpiffeId("cluster.local", "default", "weather-backend")
    trust_domain, namespace, service_account = parsed
    assert (trust_domain, namespace, service_account) == (
        "cluster.local",
        "default",
        "weather-backend",
    )
    assert parsed.uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "https://cluster.local/ns/default/sa/web",
        "spiffe://cluster.local",
        "spiffe://Cluster.Local/ns/default/sa/web",
        "spiffe://cluster.local:443/ns/default/sa/web",
        "spiffe://cluster.local/ns/default/sa/",
        "spiffe://cluster.local/ns/default/sa/web/",
        "spiffe://cluster.local/ns/default/serviceaccount/web",
        "spiffe://cluster.local/ns/../sa/web",
        "spiffe://cluster.local/ns/default/sa/web?x=1",
        "spiffe://cluster.local/ns/default/sa/web#frag",
        "spiffe://user@cluster.local/ns/default/sa/web",
        "spiffe:///ns/default/sa/web",
    ],
)
def test_parse_spiffe_id_rejects_malformed(uri: str) -> None:
    with pytest.raises(ValueError, match="SPIFFE ID"):
        parse_spiffe_id(uri)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (("Cluster.local", "default", "web"), "trust domain"),
        (("cluster.local", "", "web"), "namespace"),
        (("cluster.local", "default", "a/b"), "service account"),
    ],
    ids=["upper-case-domain", "empty-namespace", "slash-in-sa"],
)
def test_spiffe_id_rejects_bad_parts(parts: tuple[str, str, str], message: str) -> None:
    with pytest.raises(SpiffeIdError, match=message):
        spiffe_id(*parts)


def test_identity_of_certificate_accepts_pem_der_and_objects(ca: CertificateAuthority) -> None:
    issued = ca.issue(WEB)
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    for form in (issued.cert_chain_pem, issued.cert_chain_pem.decode(), der, issued.certificate):
        assert identity_of_certificate(form) == WEB


def test_identity_of_certificate_rejects_certs_without_one_spiffe_id(
    ca: CertificateAuthority,
) -> None:
    with pytest.raises(SpiffeIdError, match="no subjectAltName"):
        identity_of_certificate(ca.root_certificate)
    with pytest.raises(SpiffeIdError, match="not a certificate"):
        identity_of_certificate(b"garbage")


# --- a real TLS handshake -------------------------------------------------------------------


def tls_context(identity: IssuedIdentity, directory: Path, *, server: bool) -> ssl.SSLContext:
    name = "server" if server else "client"
    files = [directory / f"{name}-{part}.pem" for part in ("cert", "key", "root")]
    write_identity(identity, *files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SPIFFE certs name no host; identity is checked below
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(files[0], files[1])
    context.load_verify_locations(cafile=files[2])
    return context


def handshake(
    server_identity: IssuedIdentity,
    client_identity: IssuedIdentity,
    directory: Path,
    *,
    send: bool = True,
) -> dict[str, object]:
    """Serve one TLS connection on 127.0.0.1 and connect to it; the server echoes what
    the client sends. Returns the peer SPIFFE IDs each side saw, the echo, and the
    "server_error" / "client_error" raised on either side."""
    server_context = tls_context(server_identity, directory, server=True)
    client_context = tls_context(client_identity, directory, server=False)
    seen: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                try:
                    with server_context.wrap_socket(conn, server_side=True) as tls:
                        peer = tls.getpeercert(binary_form=True) or b""
                        seen["client_id"] = identity_of_certificate(peer)
                        tls.sendall(tls.recv(16))
                except (ssl.SSLError, OSError) as e:
                    seen["server_error"] = e

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=5) as raw,
                client_context.wrap_socket(raw) as tls,
            ):
                peer = tls.getpeercert(binary_form=True) or b""
                seen["server_id"] = identity_of_certificate(peer)
                # With TLS 1.3 the server judges the client cert after the client's side
                # of the handshake is done, so a rejected client learns it on its first
                # read (the server's alert). It sends nothing first: data reaching a socket
                # the server has closed would turn the alert into a bare connection reset.
                if send:
                    tls.sendall(b"ping")
                seen["echo"] = tls.recv(16)
        except ssl.SSLError as e:
            seen["client_error"] = e
        finally:
            thread.join(5)
    return seen


@pytest.mark.parametrize("kind", ["root", "intermediate"])
def test_tls_handshake_between_workloads_of_one_ca(tmp_path: Path, kind: str) -> None:
    if kind == "root":
        ca = CertificateAuthority.create_self_signed()
    else:
        root, root_key = create_root()
        intermediate, key = make_intermediate(root, root_key, datetime.now(UTC))
        ca = CertificateAuthority(intermediate, key, [root])
    seen = handshake(ca.issue(API), ca.issue(WEB), tmp_path)
    assert seen == {"server_id": API, "client_id": WEB, "echo": b"ping"}


def test_tls_handshake_fails_for_client_of_another_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create_self_signed()
    stranger = CertificateAuthority.create_self_signed()
    # The client trusts the server's root, so only the client certificate can fail.
    client_identity = dataclasses.replace(stranger.issue(WEB), trust_bundle_pem=ca.trust_bundle_pem)
    seen = handshake(ca.issue(API), client_identity, tmp_path, send=False)
    assert isinstance(seen["server_error"], ssl.SSLError)
    assert "certificate verify failed" in str(seen["server_error"])
    assert isinstance(seen["client_error"], ssl.SSLError)
    assert "client_id" not in seen and "echo" not in seen
