"""A bootstrap for every WorkloadEntry of a mesh (``sailplane bootstrap --all``).

The docker compose files and ``sailplane demo`` both run one Envoy per
WorkloadEntry, so both need one bootstrap per WorkloadEntry. Files are named
after the node id (``NAME.NAMESPACE.yaml``) and depend only on the mesh and
the flags: regenerating gives the same bytes, so generated files can be
checked in and compared in a test.

Credentials for the mTLS xDS port are separate files the bootstrap names by
path. Where the proxy finds them (``cert_dir``) can differ from where they are
written: in docker compose an init container writes them into a volume that
the sidecars mount at that path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sailplane.ca import CertificateAuthority
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload, selector_matches
from sailplane.server.credentials import control_plane_identity, write_bootstrap_credentials
from sailplane.translate.bootstrap import (
    BootstrapCredentials,
    XdsAddress,
    bootstrap_yaml,
    build_bootstrap,
)
from sailplane.translate.proxy import DEFAULT_APP_ADDRESS, DEFAULT_OUTBOUND_ADDRESS, Capture

# The first line `sailplane bootstrap` writes (see bootstrap_yaml): how
# --all recognises its own files when it removes those of deleted workloads.
HEADER = "# Envoy bootstrap for "


@dataclass(frozen=True, slots=True)
class ProxyAddresses:
    """Where one proxy listens besides its inbound ports, and where its app is.
    The defaults suit a proxy in its own network namespace (a container)."""

    admin: tuple[str, int] = ("127.0.0.1", 15000)
    outbound: tuple[str, int] = DEFAULT_OUTBOUND_ADDRESS
    app: str = DEFAULT_APP_ADDRESS


def bootstrap_name(workload: Workload) -> str:
    return f"{workload.id}.yaml"


def named_credentials(
    workload: Workload, cert_dir: Path, trust_domain: str
) -> BootstrapCredentials:
    """The credential files a bootstrap names, without minting them: the
    names :func:`sailplane.server.credentials.write_bootstrap_credentials` writes."""
    stem = f"{workload.name}.{workload.namespace}"
    return BootstrapCredentials(
        cert_chain=cert_dir / f"{stem}.cert-chain.pem",
        private_key=cert_dir / f"{stem}.key.pem",
        root_cert=cert_dir / "root-cert.pem",
        server_identity=control_plane_identity(trust_domain),
    )


def mint_credentials(
    authority: CertificateAuthority, workload: Workload, out_dir: Path, cert_dir: Path | None
) -> BootstrapCredentials:
    """Mint the workload's bootstrap certificate into ``out_dir``; the
    bootstrap names the files under ``cert_dir`` (default: ``out_dir``)."""
    written = write_bootstrap_credentials(authority, workload, out_dir)
    if cert_dir is None:
        return written
    return dataclasses.replace(
        written,
        cert_chain=cert_dir / written.cert_chain.name,
        private_key=cert_dir / written.private_key.name,
        root_cert=cert_dir / written.root_cert.name,
    )


def write_bootstraps(
    workloads: Iterable[Workload],
    out_dir: Path,
    xds_address: XdsAddress | Sequence[XdsAddress],
    *,
    credentials: Callable[[Workload], BootstrapCredentials | None] = lambda _: None,
    addresses: Callable[[Workload], ProxyAddresses] = lambda _: ProxyAddresses(),
    capture: Callable[[Workload], Capture | None] = lambda _: None,
) -> list[Path]:
    """Write ``NAME.NAMESPACE.yaml`` for each workload into ``out_dir``, and
    remove bootstraps written there before for workloads that are gone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for workload in sorted(workloads, key=lambda w: w.id):
        where = addresses(workload)
        bootstrap = build_bootstrap(
            workload,
            xds_address=xds_address,
            admin_address=where.admin,
            outbound_address=where.outbound,
            app_address=where.app,
            credentials=credentials(workload),
            capture=capture(workload),
        )
        path = out_dir / bootstrap_name(workload)
        path.write_text(bootstrap_yaml(bootstrap))
        written.append(path)
    for stale in sorted(set(out_dir.glob("*.yaml")) - set(written)):
        with stale.open(encoding="utf-8", errors="replace") as file:
            if file.readline().startswith(HEADER):
                stale.unlink()
    return written


def write_mesh_bootstraps(
    mesh: MeshConfig,
    out_dir: Path,
    xds_address: XdsAddress | Sequence[XdsAddress],
    *,
    authority: CertificateAuthority | None = None,
    cert_dir: Path | None = None,
    trust_domain: str = "cluster.local",
    secure: bool = False,
    capture: Capture | None = None,
) -> list[Path]:
    """Every WorkloadEntry's bootstrap with the container defaults.
    ``secure``: use the mTLS xDS port; with ``authority`` the credentials are
    minted into ``out_dir``, without it they are only named (under
    ``cert_dir``), for someone else to mint. ``capture``: every sidecar's
    interception mode (a gateway has none); None: each one's annotation."""

    def capture_of(workload: Workload) -> Capture | None:
        gateway = any(
            g.selector and selector_matches(g.selector, workload.labels) for g in mesh.gateways
        )
        return None if gateway else capture

    def credentials(workload: Workload) -> BootstrapCredentials | None:
        if not secure:
            return None
        if authority is None:
            return named_credentials(workload, cert_dir or out_dir, trust_domain)
        return mint_credentials(authority, workload, out_dir, cert_dir)

    return write_bootstraps(
        mesh.workloads, out_dir, xds_address, credentials=credentials, capture=capture_of
    )
