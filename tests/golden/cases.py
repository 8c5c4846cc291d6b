"""Golden cases: where they live, what goes in, and checking (or rewriting)
what comes out. The layout is described in tests/golden/__init__.py."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from sailplane.config.loader import LoadResult, load_dir
from sailplane.model.mesh import MeshConfig
from sailplane.translate import Proxy, build_proxy_resources, build_routes
from sailplane.translate.build import cluster_in_scope
from sailplane.translate.clusters import build_outbound_clusters
from sailplane.translate.endpoints import build_endpoints
from sailplane.translate.locality import priority_label_names, proxy_view
from sailplane.translate.mtls import build_secrets
from sailplane.translate.tlscredentials import credential_secrets
from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Snapshot, TypeResources

ROOT = Path(__file__).parent
CONFIG = ROOT / "config"  # config/<case>/in/*.yaml: the inputs of every stage
TRANSLATE = ROOT / "translate"
CONTROLLER = ROOT / "controller"
INPUTS = "in"
SETTINGS = "case.yaml"


def case_names(stage: Path) -> list[str]:
    """Every directory of a stage is a case (a stray one fails its test)."""
    return sorted(p.name for p in stage.iterdir() if p.is_dir())


def load_case(name: str) -> LoadResult:
    inputs = CONFIG / name / INPUTS
    assert inputs.is_dir(), f"{inputs} is missing: every case reads config/<case>/in"
    return load_dir(inputs)


def case_proxies(case: Path) -> dict[str, dict[str, Any]]:
    """``case.yaml``'s ``proxies``: node id -> the node metadata it connects with."""
    settings_file = case / SETTINGS
    assert settings_file.is_file(), f"{settings_file} is missing"
    settings = yaml.safe_load(settings_file.read_text()) or {}
    proxies: dict[str, dict[str, Any]] = {
        node_id: metadata or {} for node_id, metadata in settings["proxies"].items()
    }
    return proxies


def check_outputs(directory: Path, outputs: Mapping[str, str], update: bool) -> None:
    """Compare the files of ``directory`` (but ``in/`` and ``case.yaml``) with
    ``outputs``; with ``update``, write them and remove the orphans instead."""
    present = {
        p.name: p
        for p in directory.iterdir()
        if p.name not in (INPUTS, SETTINGS) and not p.name.startswith(".")
    }
    if update:
        for name, path in present.items():
            if name not in outputs:
                assert path.is_file(), f"{path}: not a golden file; remove it by hand"
                path.unlink()
    else:
        missing, orphans = sorted(set(outputs) - set(present)), sorted(set(present) - set(outputs))
        assert not missing and not orphans, (
            f"{directory.relative_to(ROOT)}: missing {missing}, orphaned {orphans}; "
            "run `pytest tests/golden --update-golden` and review the diff"
        )
    for name, text in outputs.items():
        check_file(directory / name, text, update)


def check_file(path: Path, text: str, update: bool) -> None:
    """``path`` must hold ``text``; with ``update``, it is made to."""
    expected = path.read_text() if path.is_file() else None
    if update:
        if expected != text:
            path.write_text(text)
        return
    if text != expected:
        where = path.relative_to(ROOT)
        diff = difflib.unified_diff(
            (expected or "").splitlines(), text.splitlines(), str(where), "now", lineterm=""
        )
        shown = "\n".join(list(diff)[:80])
        raise AssertionError(
            f"{where} differs; run `pytest tests/golden --update-golden` "
            f"and review the diff:\n{shown}"
        )


# -- the translate stage, as the Controller assembles a snapshot ----------


@dataclass(frozen=True, slots=True)
class MeshWide:
    """What every sidecar of a mesh shares (sailplane/server/generation.py)."""

    clusters: tuple[cluster_pb2.Cluster, ...]
    endpoints: tuple[endpoint_pb2.ClusterLoadAssignment, ...]


@dataclass(frozen=True, slots=True)
class ProxyView:
    """One proxy's resources, each sorted by name."""

    shared_clusters: tuple[str, ...]  # the mesh-wide clusters its Sidecar lets it see
    own_clusters: tuple[cluster_pb2.Cluster, ...]
    listeners: tuple[listener_pb2.Listener, ...]
    routes: tuple[route_pb2.RouteConfiguration, ...]
    secrets: tuple[secret_pb2.Secret, ...]
    # The assignments it is sent, where its locality changes them (else the mesh-wide ones).
    endpoints: tuple[endpoint_pb2.ClusterLoadAssignment, ...] | None = None


# Secrets are minted by the CA at run time; translation only wraps them.
_PLACEHOLDER_PEM = b"-----BEGIN PLACEHOLDER-----\n"


def translate_mesh(mesh: MeshConfig) -> MeshWide:
    return MeshWide(tuple(build_outbound_clusters(mesh)), tuple(build_endpoints(mesh)))


def translate_proxy(mesh: MeshConfig, wide: MeshWide, proxy: Proxy) -> ProxyView:
    own = build_proxy_resources(mesh, proxy)
    routes = {r.name: r for r in build_routes(mesh, proxy)}
    routes.update((r.name, r) for r in own.own_routes)
    secrets = build_secrets(_PLACEHOLDER_PEM, _PLACEHOLDER_PEM, _PLACEHOLDER_PEM)
    secrets += _credential_secrets(mesh, wide, proxy, own.listeners, own.own_clusters)
    located = proxy_view(proxy.locality, proxy.workload.labels, priority_label_names(mesh))
    endpoints = tuple(build_endpoints(mesh, located))
    return ProxyView(
        endpoints=None if endpoints == wide.endpoints else endpoints,
        shared_clusters=tuple(
            c.name for c in wide.clusters if cluster_in_scope(mesh, proxy, c.name)
        ),
        own_clusters=own.own_clusters,
        listeners=own.listeners,
        routes=tuple(routes[name] for name in sorted(routes)),
        secrets=tuple(sorted(secrets, key=lambda s: s.name)),
    )


def _credential_secrets(
    mesh: MeshConfig,
    wide: MeshWide,
    proxy: Proxy,
    listeners: tuple[listener_pb2.Listener, ...],
    own_clusters: tuple[cluster_pb2.Cluster, ...],
) -> list[secret_pb2.Secret]:
    """The credentialName secrets the proxy is sent, private keys replaced
    (the controller adds them: sailplane/server/credentials.py)."""
    wanted = (
        TypeResources.build(LISTENER, ((x.name, x) for x in listeners)).references.sds
        | TypeResources.build(
            CLUSTER, ((c.name, c) for c in (*wide.clusters, *own_clusters))
        ).references.sds
    )
    found = credential_secrets(mesh, proxy.namespace, wanted)
    for secret in found:
        if secret.HasField("tls_certificate"):
            secret.tls_certificate.private_key.inline_bytes = _PLACEHOLDER_PEM
    return found


def view_snapshot(wide: MeshWide, view: ProxyView) -> Snapshot:
    """The view as the snapshot a proxy is sent (for its consistency check)."""
    shared = [c for c in wide.clusters if c.name in set(view.shared_clusters)]
    clusters = {c.name: c for c in shared} | {c.name: c for c in view.own_clusters}
    return Snapshot(
        {
            CLUSTER: TypeResources.build(CLUSTER, clusters.items()),
            ENDPOINT: TypeResources.build(
                ENDPOINT, ((e.cluster_name, e) for e in view.endpoints or wide.endpoints)
            ),
            LISTENER: TypeResources.build(LISTENER, ((x.name, x) for x in view.listeners)),
            ROUTE: TypeResources.build(ROUTE, ((r.name, r) for r in view.routes)),
            SECRET: TypeResources.build(SECRET, ((s.name, s) for s in view.secrets)),
        }
    )
