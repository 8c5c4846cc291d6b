"""Parse PeerAuthentication and the legacy (pre-1.5) authentication
``Policy`` and ``MeshPolicy``."""

from __future__ import annotations

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader
from sailplane.model.security import MODES, MtlsMode, PeerAuthentication
from sailplane.model.source import Severity


def parse_peer_authentication(r: ObjectReader) -> PeerAuthentication | None:
    """istio.io/latest/docs/reference/config/security/peer_authentication"""
    check_declared_fields(r)
    mode = r.enum(("spec", "mtls", "mode"), MODES, "UNSET")
    selector = r.labels(("spec", "selector", "matchLabels"))
    ports: dict[int, MtlsMode] = {}
    for key in r.mapping(("spec", "portLevelMtls")) or {}:
        path = ("spec", "portLevelMtls", key)
        try:
            port = int(key)
        except (TypeError, ValueError):
            r.report(path, f"port {key!r} is not a number", code="IST0106")
            continue
        if not 0 < port < 65536:
            r.report(path, f"port {port} is out of range 1-65535", code="IST0106")
            continue
        ports[port] = r.enum((*path, "mode"), MODES, "UNSET")
    if ports and not selector:
        # Istio ignores portLevelMtls without a workload selector.
        r.report(
            ("spec", "portLevelMtls"),
            "portLevelMtls needs a workload selector; ignored",
            Severity.WARNING,
        )
        ports = {}
    if r.failed:
        return None
    return PeerAuthentication(r.name, r.namespace, r.source, mode, selector, ports)


def parse_legacy_policy(r: ObjectReader) -> PeerAuthentication | None:
    """``authentication.istio.io/v1alpha1 Policy``: ``targets`` name services;
    ``peers: [{mtls: {mode: ...}}]`` sets the mode (STRICT when ``mtls`` is
    empty, as the old API defined); no ``peers`` means plaintext."""
    r.report(
        ("kind",),
        "authentication.istio.io Policy is deprecated since Istio 1.5; use "
        "security.istio.io/v1 PeerAuthentication (spec.selector, spec.mtls.mode)",
        Severity.WARNING,
    )
    check_declared_fields(r)
    targets = []
    for i, _ in enumerate(r.sequence(("spec", "targets"))):
        name = r.string(("spec", "targets", i, "name"), required=True)
        if name:
            targets.append(name)
    mode = _legacy_mode(r)
    if r.failed:
        return None
    return PeerAuthentication(
        r.name, r.namespace, r.source, mode, target_services=tuple(targets), legacy=True
    )


def _legacy_mode(r: ObjectReader) -> MtlsMode:
    """``peers: [{mtls: {mode: ...}}]``: STRICT when ``mtls`` is empty, as the
    old API defined; no ``peers`` means plaintext."""
    mode: MtlsMode = "DISABLE"
    for i, _ in enumerate(r.sequence(("spec", "peers"))):
        if r.has(("spec", "peers", i, "mtls")):
            mode = r.enum(("spec", "peers", i, "mtls", "mode"), ("STRICT", "PERMISSIVE"), "STRICT")
    return mode


def parse_mesh_policy(r: ObjectReader) -> PeerAuthentication | None:
    """``authentication.istio.io/v1alpha1 MeshPolicy`` (Istio 1.4): the
    cluster-scoped Policy named ``default``, the mesh-wide mode, read as a
    PeerAuthentication in the root namespace. Istio 1.4 validated it so
    (pkg/config/validation ValidateAuthenticationPolicy, cluster-scoped):
    the name must be ``default`` and it takes no targets."""
    r.report(
        ("kind",),
        "authentication.istio.io MeshPolicy is deprecated since Istio 1.5; use a "
        "security.istio.io/v1 PeerAuthentication in the root namespace without a "
        "selector (spec.mtls.mode)",
        Severity.WARNING,
    )
    check_declared_fields(r)
    if r.name != "default":
        r.report(
            ("metadata", "name"),
            f"a MeshPolicy must be named 'default', found {r.name!r}",
            code="IST0106",
        )
    if r.has(("spec", "targets")):
        r.report(("spec", "targets"), "a MeshPolicy must not have targets", code="IST0106")
    mode = _legacy_mode(r)
    if r.failed:
        return None
    return PeerAuthentication(r.name, r.namespace, r.source, mode, legacy=True, mesh_wide=True)
