"""Istio's security API: PeerAuthentication (and the legacy ``Policy`` kind),
RequestAuthentication.

Mode resolution follows istio.io/latest/docs/reference/config/security/
peer_authentication: a workload-selector policy beats a namespace-wide
policy, which beats the mesh-wide policy in the root namespace; ``UNSET``
inherits from the next level; with nothing set, the mesh is PERMISSIVE.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sailplane.model.source import Source

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
MODES: tuple[MtlsMode, ...] = get_args(MtlsMode)
DEFAULT_ROOT_NAMESPACE = "istio-system"
TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    name: str
    namespace: str
    source: Source
    mode: MtlsMode = "UNSET"
    selector: Mapping[str, str] = field(default_factory=dict)
    port_level: Mapping[int, MtlsMode] = field(default_factory=dict)
    # The legacy Policy kind targets services by name rather than by labels.
    target_services: tuple[str, ...] = ()
    legacy: bool = False
    # A legacy MeshPolicy: mesh-wide, whatever namespace it was read in.
    mesh_wide: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload_scoped(self) -> bool:
        return bool(self.selector or self.target_services)


# -- RequestAuthentication ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class JwtHeader:
    """Where a token is read from: a header, and the prefix before the token."""

    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class JwtRule:
    """One ``jwtRules[]`` entry of a RequestAuthentication
    (istio.io/latest/docs/reference/config/security/jwt): one issuer, its
    keys (``jwks`` inline or ``jwks_uri``), and where the token is found."""

    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks: str = field(default="", repr=False)  # public keys, yet kept out of logs
    jwks_uri: str = ""
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    # (claim, header) pairs: the claim's value is copied into the header.
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()
    space_delimited_claims: tuple[str, ...] = ()
    timeout: float | None = None  # seconds, for fetching ``jwks_uri``

    @property
    def jwks_authority(self) -> tuple[str, int] | None:
        """``(host, port)`` of ``jwks_uri`` (port 80/443 by scheme, as
        Istio's ParseJwksURI), or None without a usable one."""
        if not self.jwks_uri:
            return None
        try:
            parts = urllib.parse.urlsplit(self.jwks_uri)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        return parts.hostname, port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True, slots=True)
class RequestAuthentication:
    """Which JWTs a workload accepts. A request with a token that fails
    every rule is refused (401); a request without a token passes, and is
    left to AuthorizationPolicy (``requestPrincipals``) to judge."""

    name: str
    namespace: str
    source: Source
    selector: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[JwtRule, ...] = ()
    # Gateway API / waypoint targets (``targetRef(s)``): the policy applies to
    # those only, which sailplane does not run, so to no workload at all.
    target_refs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
