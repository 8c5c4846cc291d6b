"""Parse Kubernetes ``v1 Secret`` objects that hold TLS credentials.

Istio reads the Secret a ``credentialName`` names with these keys
(pilot/pkg/credentials/kube/secrets.go, ExtractCertInfo / ExtractRoot):
``cert``/``key`` (generic) or ``tls.crt``/``tls.key`` (``kubernetes.io/tls``)
for the certificate, ``cacert`` or ``ca.crt`` for the CA that verifies
peers. ``data`` is base64; ``stringData`` is plain and wins, as the API
server merges it.

Nothing here quotes a value: a diagnostic names the Secret and the key,
never what it holds.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sailplane.config.reader import ObjectReader
from sailplane.model.credentials import TLSSecret, find_secret, secret_reference
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import ClientTLS, DestinationRule, TrafficPolicy
from sailplane.model.registry import selector_matches
from sailplane.model.source import Diagnostic, FieldPath, Severity, format_field_path

_CERT_KEYS = (("cert", "key"), ("tls.crt", "tls.key"))
_CA_KEYS = ("cacert", "ca.crt")


def _values(r: ObjectReader) -> dict[str, tuple[bytes, FieldPath]]:
    """Key -> (bytes, where it is written); unreadable values are reported."""
    out: dict[str, tuple[bytes, FieldPath]] = {}
    data = r.mapping(("data",)) or {}
    for key, value in data.items():
        path: FieldPath = ("data", str(key))
        if not isinstance(value, str):
            r.report(path, "a Secret's data value must be a base64 string", code="IST0106")
            continue
        try:
            out[str(key)] = (base64.b64decode("".join(value.split()), validate=True), path)
        except (binascii.Error, ValueError):
            r.report(path, "not valid base64 (use stringData for plain text)", code="IST0106")
            out[str(key)] = (b"", path)  # present, reported: no second word about it
    strings: Mapping[str, object] = r.mapping(("stringData",)) or {}
    for key, value in strings.items():
        path = ("stringData", str(key))
        if not isinstance(value, str):
            r.report(path, "a Secret's stringData value must be a string", code="IST0106")
            continue
        out[str(key)] = (value.encode(), path)
    return out


def _certificates(r: ObjectReader, pem: bytes, path: FieldPath) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        r.report(path, "not a PEM certificate (chain)", code="IST0106")
    return certificates


def _check_key(r: ObjectReader, pem: bytes, path: FieldPath, leaf: x509.Certificate) -> None:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        r.report(path, "not an unencrypted PEM private key", code="IST0106")
        return
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != leaf.public_key().public_bytes(
        encoding, public
    ):
        r.report(path, "the private key does not match the certificate", code="IST0106")


def parse_secret(r: ObjectReader) -> TLSSecret | None:
    """The Secret's TLS material, or None when it has none (then a warning:
    a Secret in the directory is there for a credentialName) or errors."""
    values = _values(r)
    cert_chain = private_key = ca = b""
    for cert_key, key_key in _CERT_KEYS:
        if cert_key in values or key_key in values:
            if cert_key not in values or key_key not in values:
                have, missing = (cert_key, key_key) if cert_key in values else (key_key, cert_key)
                r.report(("data",), f"has {have} but no {missing}", code="IST0106")
                break
            (cert_pem, cert_path), (key_pem, key_path) = values[cert_key], values[key_key]
            if r.failed:
                break
            if not cert_pem.strip() or not key_pem.strip():
                r.report(cert_path, f"{cert_key} and {key_key} are empty", code="IST0106")
                break
            chain = _certificates(r, cert_pem, cert_path)
            if chain:
                _check_key(r, key_pem, key_path, chain[0])
            cert_chain, private_key = cert_pem, key_pem
            break
    for ca_key in _CA_KEYS:
        if ca_key in values:
            ca_pem, ca_path = values[ca_key]
            _certificates(r, ca_pem, ca_path)
            ca = ca_pem
            break
    if not (cert_chain or ca) and not r.failed:
        found = ", ".join(sorted(values)) or "none"
        r.report(
            ("data",),
            "no TLS keys (cert/key, tls.crt/tls.key, cacert or ca.crt; found: "
            f"{found}); not usable as a credentialName",
            Severity.WARNING,
        )
        return None
    if r.failed:
        return None
    return TLSSecret(r.name, r.namespace, r.source, cert_chain, private_key, ca)


def _client_tls_settings(rule: DestinationRule) -> list[tuple[FieldPath, ClientTLS]]:
    out = list(_policy_tls(rule.traffic_policy, ("spec", "trafficPolicy")))
    for i, subset in enumerate(rule.subsets):
        out.extend(_policy_tls(subset.traffic_policy, ("spec", "subsets", i, "trafficPolicy")))
    return out


def _policy_tls(
    policy: TrafficPolicy | None, path: FieldPath
) -> Iterator[tuple[FieldPath, ClientTLS]]:
    """A policy's TLS settings and its ports' (a module function: a nested
    recursive one is a reference cycle, garbage for the collector at every
    load, one per DestinationRule)."""
    if policy is None:
        return
    if policy.tls is not None:
        yield (*path, "tls"), policy.tls
    for i, port in enumerate(sorted(policy.port_level)):
        yield from _policy_tls(policy.port_level[port], (*path, "portLevelSettings", i))


def check_client_credentials(mesh: MeshConfig) -> list[Diagnostic]:
    """A DestinationRule's credentialName with no Secret of that name in the
    rule's namespace (the proxies it selects) nor in a gateway's: whoever
    uses the rule waits for the secret and its TLS connections fail (Istio
    serves nothing for a missing Secret)."""
    gateway_namespaces = {
        w.namespace
        for g in mesh.gateways
        for w in mesh.workloads
        if g.selector and selector_matches(g.selector, w.labels)
    }
    problems = []
    for rule in mesh.destination_rules:
        for path, tls in _client_tls_settings(rule):
            if not tls.credential_name or tls.mode not in ("SIMPLE", "MUTUAL"):
                continue
            namespaces = sorted({rule.namespace, *gateway_namespaces})
            found = [
                ns
                for ns in namespaces
                if find_secret(mesh.secrets, *secret_reference(tls.credential_name, ns))
            ]
            if found:
                continue
            problems.append(
                Diagnostic(
                    file=rule.source.file,
                    position=rule.source.locate((*path, "credentialName")),
                    message=f"credentialName {tls.credential_name!r}: no Secret of that name in "
                    f"namespace {' or '.join(namespaces)}; proxies using this rule wait for it "
                    f"and their TLS connections to {rule.host} fail",
                    obj=f"DestinationRule {rule.key}",
                    field_path=format_field_path((*path, "credentialName")),
                    severity=Severity.WARNING,
                    code="IST0101",
                )
            )
    return problems
