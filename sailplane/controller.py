"""The glue between configuration and xDS: holds the mesh in force, admits
proxies, and keeps every connected proxy's snapshot up to date.

Work is shared: mesh-wide resources are translated and encoded once per
configuration, route tables once per (namespace, port); only a proxy's own
listeners and inbound clusters are built per proxy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from sailplane.ca import CertificateAuthority, IdentityStore, identity_of_certificate
from sailplane.errors import UnknownProxyError
from sailplane.logs import event
from sailplane.model.mesh import MeshConfig
from sailplane.translate import (
    MeshWide,
    Proxy,
    build_mesh_wide,
    build_proxy_resources,
    build_routes,
    proxy_from_node,
)
from sailplane.translate.build import cluster_in_scope, routes_key, scope_key
from sailplane.translate.mtls import build_secrets
from sailplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    Snapshot,
    SnapshotCache,
    TypeResources,
    merge_types,
)
from sailplane.xds.server import Peer
from sailplane.xds.types import SHORT_NAMES

log = logging.getLogger("sailplane.controller")


@dataclass(frozen=True, slots=True)
class _Generation:
    """Per-configuration shared work."""

    mesh: MeshConfig
    mesh_wide: MeshWide
    clusters: TypeResources
    endpoints: TypeResources


class Controller:
    """Implements :class:`sailplane.xds.StreamHooks`."""

    def __init__(
        self,
        cache: SnapshotCache,
        identities: IdentityStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        trust_domain: str = "cluster.local",
    ) -> None:
        self.trust_domain = trust_domain
        self.cache = cache
        self.clock = clock
        # Every sidecar gets SDS secrets; without a CA given, an in-memory one.
        self.identities = (
            identities
            if identities is not None
            else IdentityStore(CertificateAuthority.create_self_signed())
        )
        self._secrets: dict[tuple[str, int], TypeResources] = {}
        self.ready = asyncio.Event()
        self._generation: _Generation | None = None
        self._routes: dict[tuple[object, ...], TypeResources] = {}
        self._scopes: dict[str, TypeResources] = {}
        self._proxies: dict[str, Proxy] = {}
        self._streams: dict[str, int] = {}
        self.nacks: list[tuple[str, str, str, str]] = []
        self.last_apply = ""  # "full" or "endpoints": how the last apply() translated

    @property
    def mesh(self) -> MeshConfig | None:
        return self._generation.mesh if self._generation else None

    # -- configuration -----------------------------------------------------

    def apply(self, mesh: MeshConfig) -> int:
        """Put ``mesh`` in force; returns how many proxies' snapshots changed."""
        if mesh.trust_domain != self.trust_domain:
            mesh = dataclasses.replace(mesh, trust_domain=self.trust_domain)
        incremental = self._apply_endpoints_only(mesh)
        if incremental is not None:
            return incremental
        self.last_apply = "full"
        wide = build_mesh_wide(mesh)
        self._generation = _Generation(
            mesh=mesh,
            mesh_wide=wide,
            clusters=_types(CLUSTER, wide.clusters),
            endpoints=_types(ENDPOINT, wide.endpoints, "cluster_name"),
        )
        self._routes = {}
        self._scopes = {}
        changed = 0
        for node_id, proxy in list(self._proxies.items()):
            try:
                refreshed = proxy_from_node(node_id, proxy.metadata, mesh)
            except UnknownProxyError:
                log.warning("proxy %s: its WorkloadEntry is gone; keeping its last config", node_id)
                continue
            self._proxies[node_id] = refreshed
            changed += self.cache.set(node_id, self.snapshot_for(refreshed))
        self.ready.set()
        return changed

    def snapshot_for(self, proxy: Proxy) -> Snapshot:
        generation = self._generation
        assert generation is not None, "apply() a configuration first"
        key = routes_key(generation.mesh, proxy)
        routes = self._routes.get(key)
        if routes is None:
            routes = self._routes[key] = _types(ROUTE, build_routes(generation.mesh, proxy))
        resources = build_proxy_resources(generation.mesh, proxy, generation.mesh_wide, routes=())
        return Snapshot(
            {
                CLUSTER: merge_types(
                    self._scoped_clusters(proxy), _types(CLUSTER, resources.own_clusters)
                ),
                ENDPOINT: generation.endpoints,
                LISTENER: _types(LISTENER, resources.listeners),
                ROUTE: routes,
                SECRET: self.secrets_for(proxy),
            }
        )

    def _scoped_clusters(self, proxy: Proxy) -> TypeResources:
        """The mesh-wide clusters this proxy's Sidecar lets it see: a subset of
        the shared encoded chunks, never re-encoded, cached per Sidecar."""
        generation = self._generation
        assert generation is not None
        scope = scope_key(generation.mesh, proxy)
        if not scope:
            return generation.clusters
        found = self._scopes.get(scope)
        if found is None:
            base = generation.clusters
            names = [n for n in base.chunks if cluster_in_scope(generation.mesh, proxy, n)]
            digest = hashlib.sha256(f"{base.version}|{scope}".encode()).hexdigest()[:16]
            found = self._scopes[scope] = TypeResources(
                base.type_url,
                digest,
                {n: base.chunks[n] for n in names},
                {n: base.messages[n] for n in names},
            )
        return found

    # -- incremental translation (endpoint-only changes) ---------------------

    def _apply_endpoints_only(self, mesh: MeshConfig) -> int | None:
        """Put ``mesh`` in force by re-translating only what a change of
        WorkloadEntries touches, as Istio's EDS-only push does: the endpoints
        of the services whose instances changed, and the full snapshot of the
        proxies whose own WorkloadEntry changed. Everyone else gets their last
        snapshot with the new ClusterLoadAssignments, so a push sends EDS only.

        Returns None (do a full apply) unless only workloads changed and no
        cluster moved (a cluster carries its endpoints' identities, and DNS
        clusters their endpoints)."""
        old = self._generation
        if old is None or not _only_workloads_differ(old.mesh, mesh):
            return None
        self.last_apply = "endpoints"
        affected_old, affected_new = [], []
        for before, after in zip(old.mesh.services, mesh.services, strict=True):
            if old.mesh.endpoints_of(before) != mesh.endpoints_of(after):
                affected_old.append(before)
                affected_new.append(after)
        was = build_mesh_wide(dataclasses.replace(old.mesh, services=tuple(affected_old)))
        now = build_mesh_wide(dataclasses.replace(mesh, services=tuple(affected_new)))
        if was.clusters != now.clusters:
            self.last_apply = "full"
            return None
        gone = {e.cluster_name for e in was.endpoints} - {e.cluster_name for e in now.endpoints}
        endpoints = old.endpoints.replace([(e.cluster_name, e) for e in now.endpoints], gone)
        by_name = {e.cluster_name: e for e in old.mesh_wide.endpoints if e.cluster_name not in gone}
        by_name.update((e.cluster_name, e) for e in now.endpoints)
        wide = dataclasses.replace(
            old.mesh_wide, endpoints=tuple(by_name[n] for n in sorted(by_name))
        )
        self._generation = dataclasses.replace(old, mesh=mesh, mesh_wide=wide, endpoints=endpoints)
        changed = 0
        for node_id, proxy in list(self._proxies.items()):
            workload = mesh.workloads_by_id.get(node_id)
            if workload is None:
                log.warning("proxy %s: its WorkloadEntry is gone; keeping its last config", node_id)
                continue
            current = self.cache.get(node_id)
            if workload == proxy.workload and current is not None:
                snapshot = Snapshot({**current.resources, ENDPOINT: endpoints})
            else:
                proxy = self._proxies[node_id] = proxy_from_node(node_id, proxy.metadata, mesh)
                snapshot = self.snapshot_for(proxy)
            changed += self.cache.set(node_id, snapshot)
        return changed

    def secrets_for(self, proxy: Proxy) -> TypeResources:
        """``default`` + ``ROOTCA`` for the proxy's own identity only; encoded
        once per issued certificate and shared by that identity's proxies."""
        identity = self.identities.get_workload(proxy.namespace, proxy.workload.service_account)
        key = (identity.spiffe_id, identity.serial)
        found = self._secrets.get(key)
        if found is None:
            for stale in [k for k in self._secrets if k[0] == identity.spiffe_id]:
                del self._secrets[stale]
            secrets = build_secrets(
                identity.cert_chain_pem, identity.private_key_pem, identity.trust_bundle_pem
            )
            found = self._secrets[key] = _types(SECRET, secrets)
        return found

    def rotate_certificates(self) -> int:
        """Re-issue certificates past half their life and push the new secrets
        (an SDS-only push: nothing else in those snapshots changes)."""
        rotated = set(self.identities.rotate_due())
        if not rotated or self._generation is None:
            return 0
        changed = 0
        for node_id, proxy in list(self._proxies.items()):
            spiffe = self._generation.mesh.spiffe_id(
                proxy.namespace, proxy.workload.service_account
            )
            if spiffe in rotated:
                changed += self.cache.set(node_id, self.snapshot_for(proxy))
        log.info("rotated %d certificates; %d proxies updated", len(rotated), changed)
        return changed

    # -- StreamHooks -------------------------------------------------------

    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        await self.ready.wait()
        mesh = self.mesh
        assert mesh is not None
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        proxy = proxy_from_node(node.id, metadata, mesh)
        if peer.certificate_pem is not None:
            # The mTLS xDS port: the certificate must be this workload's own
            # identity, or one proxy could fetch another's secrets.
            try:
                claimed = identity_of_certificate(peer.certificate_pem)
            except ValueError as exc:
                raise PermissionError(
                    f"node {proxy.id!r}: unusable client certificate: {exc}"
                ) from exc
            expected = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
            if claimed != expected:
                raise PermissionError(
                    f"node {proxy.id!r} belongs to {expected}, but the client certificate "
                    f"is {claimed}"
                )
        self._proxies[proxy.id] = proxy
        self._streams[proxy.id] = self._streams.get(proxy.id, 0) + 1
        self.cache.set(proxy.id, self.snapshot_for(proxy))
        event(
            log,
            logging.INFO,
            "proxy.connect",
            f"proxy {proxy.id} connected",
            proxy=proxy.id,
            peer=str(peer),
            role=proxy.role.value,
        )
        return proxy.id

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        event(
            log,
            logging.INFO,
            "proxy.disconnect",
            f"proxy {node_id} disconnected",
            proxy=node_id,
            stream=stream_id,
        )
        remaining = self._streams.get(node_id, 1) - 1
        if remaining <= 0:
            self._streams.pop(node_id, None)
            self._proxies.pop(node_id, None)
            self.cache.clear(node_id)
        else:
            self._streams[node_id] = remaining

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        event(
            log,
            logging.WARNING,
            "proxy.nack",
            f"proxy {node_id} rejected {SHORT_NAMES[type_url]} version {version}: {message}",
            proxy=node_id,
            type=SHORT_NAMES[type_url],
            version=version,
            detail={"error": message},
        )
        self.nacks.append((node_id, type_url, version, message))
        del self.nacks[:-100]

    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None:
        pass

    # -- debug -------------------------------------------------------------

    def config_dump(self, node_id: str) -> dict[str, list[dict[str, object]]] | None:
        snapshot = self.cache.get(node_id)
        if snapshot is None:
            proxy_mesh = self.mesh
            if proxy_mesh is None or node_id not in proxy_mesh.workloads_by_id:
                return None
            snapshot = self.snapshot_for(proxy_from_node(node_id, {}, proxy_mesh))
        dump: dict[str, list[dict[str, object]]] = {
            SHORT_NAMES[t]: [
                json_format.MessageToDict(m, preserving_proto_field_name=True)
                for m in snapshot.get(t).messages.values()
            ]
            for t in SHORT_NAMES
        }
        for secret in dump["secrets"]:
            certificate = secret.get("tls_certificate")
            if isinstance(certificate, dict) and "private_key" in certificate:
                certificate["private_key"] = {"inline_bytes": "[redacted]"}
        return dump


def _only_workloads_differ(old: MeshConfig, new: MeshConfig) -> bool:
    """Whether two configurations differ in WorkloadEntries at most (every
    other field compared, so a field added to MeshConfig later counts)."""
    ignored = {"workloads", "objects", "diagnostics", "digest"}
    return all(
        getattr(old, f.name) == getattr(new, f.name)
        for f in dataclasses.fields(MeshConfig)
        if f.name not in ignored
    )


def _types(type_url: str, messages: object, name_field: str = "name") -> TypeResources:
    items = [(getattr(m, name_field), m) for m in messages]  # type: ignore[attr-defined]
    return TypeResources.build(type_url, items)
