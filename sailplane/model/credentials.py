"""TLS credentials from Kubernetes ``Secret`` objects (``credentialName``).

Istio's gateways and DestinationRules name a Secret in the proxy's
namespace; istiod reads it and serves it over SDS as ``kubernetes://NAME``
(certificate and key) and ``kubernetes://NAME-cacert`` (the CA that
verifies the peer), see pilot/pkg/xds/sds.go. The key material never shows
in a repr: these values travel through logs, diagnostics and debug views.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sailplane.model.networking import ServerTLS
from sailplane.model.source import Source

# Istio's SDS resource names (pilot/pkg/model/credentials/resource.go).
KUBERNETES_SECRET_PREFIX = "kubernetes://"
CA_SUFFIX = "-cacert"


@dataclass(frozen=True, slots=True)
class TLSSecret:
    """One Secret's TLS material, PEM. ``cert_chain``/``private_key`` are empty
    for a CA-only Secret (``NAME-cacert``); ``ca_certificates`` is empty when
    the Secret carries none."""

    name: str
    namespace: str
    source: Source = field(repr=False, compare=False)
    cert_chain: bytes = field(default=b"", repr=False)
    private_key: bytes = field(default=b"", repr=False)
    ca_certificates: bytes = field(default=b"", repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def has_certificate(self) -> bool:
        return bool(self.cert_chain and self.private_key)


def sds_name(credential_name: str) -> str:
    """The SDS resource of a credentialName (already prefixed names stay)."""
    if credential_name.startswith(KUBERNETES_SECRET_PREFIX):
        return credential_name
    return KUBERNETES_SECRET_PREFIX + credential_name


def secret_reference(credential_name: str, namespace: str) -> tuple[str, str]:
    """(namespace, name) of the Secret a credentialName means for a proxy in
    ``namespace``: ``kubernetes://[NS/]NAME`` or ``NAME`` (Istio's
    ParseResourceName: no namespace means the proxy's)."""
    rest = credential_name.removeprefix(KUBERNETES_SECRET_PREFIX)
    ns, _, name = rest.rpartition("/")
    return (ns or namespace), name


def find_secret(secrets: tuple[TLSSecret, ...], namespace: str, name: str) -> TLSSecret | None:
    return next((s for s in secrets if (s.namespace, s.name) == (namespace, name)), None)


def find_ca(secrets: tuple[TLSSecret, ...], namespace: str, name: str) -> TLSSecret | None:
    """The CA for a MUTUAL credentialName: the Secret ``NAME-cacert`` if it
    exists, else ``NAME`` itself (Istio's GetCaCert), when it has a CA."""
    found = find_secret(secrets, namespace, name + CA_SUFFIX) or find_secret(
        secrets, namespace, name
    )
    return found if found is not None and found.ca_certificates else None


def missing_credentials(secrets: tuple[TLSSecret, ...], namespace: str, tls: ServerTLS) -> str:
    """Why a server's credentialName cannot be served to a proxy of
    ``namespace`` (the Secret, or its CA for MUTUAL, is not there); "" if it can."""
    if not tls.credential_name or tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL"):
        return ""
    ns, name = secret_reference(tls.credential_name, namespace)
    if ns != namespace:
        return f"Secret {ns}/{name} is in another namespace (a proxy reads its own namespace's)"
    found = find_secret(secrets, ns, name)
    if found is None or not found.has_certificate:
        return f"no Secret {ns}/{name} with a certificate and key"
    if tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and find_ca(secrets, ns, name) is None:
        return (
            f"{tls.mode} needs a CA: no Secret {ns}/{name}{CA_SUFFIX}, and {ns}/{name} "
            "has no ca.crt or cacert"
        )
    return ""
