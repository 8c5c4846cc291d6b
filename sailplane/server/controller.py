"""The glue between configuration and xDS: holds the mesh in force, admits
proxies, and keeps every connected proxy's snapshot up to date.

Work is done once and shared: mesh-wide clusters and endpoints per service
(generation.py), route tables per routes_key from encoded virtual hosts
(routetables.py); only a proxy's own listeners, inbound clusters and
inbound route configs (which carry its authorization) are built per proxy,
and only when something they depend on changed. A new configuration is
compared with the one in force (translate/impact.py) and only what the
change touches is re-translated, as Istio scopes its pushes.

Each stream's snapshot depends only on the registry and on what that stream
claimed (node metadata) and proved (its client certificate); see
``admission.StreamKeys``. Secrets go only to the identity a certificate
proved on the mTLS port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2

from sailplane.ca import CertificateAuthority, IdentityStore, IssuedIdentity
from sailplane.errors import UnknownProxy
from sailplane.logs import event
from sailplane.model.mesh import MeshConfig
from sailplane.server.admission import StreamKeys, admitted_proxy
from sailplane.server.credentials import consistency_problems, with_credentials
from sailplane.server.generation import Generation, build_generation, next_generation
from sailplane.server.routetables import RouteTable, build_sidecar_route_table
from sailplane.translate import Proxy, build_proxy_resources, build_routes, proxy_from_node
from sailplane.translate.build import (
    cluster_in_scope,
    own_route_tables,
    routes_key,
    scope_key,
)
from sailplane.translate.impact import FULL, Impact, impact_of, rebuilds_own
from sailplane.translate.mtls import build_secrets
from sailplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    Peer,
    Snapshot,
    SnapshotCache,
    TypeResources,
    merge_types,
)
from sailplane.xds.types import SHORT_NAMES

log = logging.getLogger("sailplane.controller")


@dataclass(slots=True)
class _ProxyEntry:
    """A connected proxy and the resources only it has."""

    proxy: Proxy
    own_clusters: TypeResources
    listeners: TypeResources
    routes: TypeResources | None  # a gateway's own route tables; sidecars share theirs
    # A sidecar's inbound route configs (they carry its AuthorizationPolicies).
    own_routes: TypeResources
    # (shared clusters, merged with own_clusters): rebuilt only when they move
    merged: tuple[TypeResources, TypeResources] | None = None
    # (shared route table, merged with own_routes): likewise
    merged_routes: tuple[TypeResources, TypeResources] | None = None
    # (routes_key, scope_key) as of Controller._keys_epoch
    keys: tuple[tuple[object, ...], str] | None = None
    keys_epoch: int = -1


class Controller:
    """Admits streams (:class:`sailplane.xds.AdmissionHooks`) and hears their
    NACKs; keeps each admitted proxy's snapshot in the cache."""

    def __init__(
        self,
        cache: SnapshotCache,
        identities: IdentityStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        trust_domain: str = "cluster.local",
        issue: bool = True,
    ) -> None:
        """``issue=False``: never ask the CA for a certificate (dry runs); a
        proxy whose identity has none yet gets no secrets."""
        self.trust_domain = trust_domain
        self.issue = issue
        self.cache = cache
        self.clock = clock
        # Every sidecar gets SDS secrets; without a CA given, an in-memory one.
        self.identities = (
            identities
            if identities is not None
            else IdentityStore(CertificateAuthority.create_self_signed())
        )
        # SPIFFE id -> (certificate serial, its encoded secrets)
        self._secrets: dict[str, tuple[int, TypeResources]] = {}
        # During apply(): each identity's certificate, asked of the CA once
        # (proxies of one service account share it).
        self._certificates: dict[str, IssuedIdentity | None] | None = None
        self.ready = asyncio.Event()
        self._generation: Generation | None = None
        self._tables: dict[tuple[object, ...], RouteTable] = {}
        # During apply(): the tables of the configuration before, to build from.
        self._previous_tables: dict[tuple[object, ...], RouteTable] = {}
        self._scopes: dict[str, tuple[TypeResources, TypeResources]] = {}
        # Keyed by stream key (admission.StreamKeys): one per node id and claims.
        self._proxies: dict[str, _ProxyEntry] = {}
        self._streams: dict[str, int] = {}
        self._keys = StreamKeys()  # which snapshot each new stream reads
        self.nacks: list[tuple[str, str, str, str]] = []
        self.last_impact: Impact = FULL
        # Moves when a change may move proxies' route or scope keys (routes
        # or anything full); an endpoint change leaves every key as it was.
        self._keys_epoch = 0
        self.last_apply = ""  # Impact.kind of the last apply(): "full", "endpoints", ...
        self.last_changed: list[str] = []  # cache keys whose snapshots the last apply() moved

    @property
    def mesh(self) -> MeshConfig | None:
        return self._generation.mesh if self._generation else None

    # -- configuration -----------------------------------------------------

    def apply(self, mesh: MeshConfig) -> int:
        """Put ``mesh`` in force; returns how many proxies' snapshots changed."""
        if mesh.trust_domain != self.trust_domain:
            mesh = mesh.with_fields(trust_domain=self.trust_domain)
        previous = self._generation
        impact = FULL if previous is None else impact_of(previous.mesh, mesh)
        self._generation = (
            build_generation(mesh) if previous is None else next_generation(previous, mesh, impact)
        )
        self.last_impact, self.last_apply = impact, impact.kind
        if impact.full or impact.routes:
            self._keys_epoch += 1
        self._previous_tables = {} if impact.full else self._tables
        self._tables = {}
        changed: list[str] = []
        check = _checking()  # once, not per proxy: os.environ.get costs microseconds
        self._certificates = {}
        try:
            for key, entry in list(self._proxies.items()):
                node_id = entry.proxy.id
                if rebuilds_own(impact, node_id, entry.proxy):
                    try:
                        refreshed = proxy_from_node(node_id, entry.proxy.metadata, mesh)
                    except UnknownProxy:
                        log.warning(
                            "proxy %s: its WorkloadEntry is gone; keeping its last config", node_id
                        )
                        continue
                    refreshed = dataclasses.replace(
                        refreshed,
                        proven_identity=entry.proxy.proven_identity,
                        node_locality=entry.proxy.node_locality,
                    )
                    entry = self._proxies[key] = self._entry(refreshed)
                if self.cache.set(key, self._snapshot(entry, check)):
                    changed.append(key)
        finally:
            self._previous_tables = {}
            self._certificates = None
            self.last_changed = changed
        self.ready.set()
        return len(changed)

    def admit(self, proxy: Proxy, key: str | None = None) -> Snapshot:
        """Keep ``proxy``'s snapshot in the cache under ``key`` (default: its
        node id) from now on (a stream connected)."""
        key = key or proxy.id
        entry = self._proxies[key] = self._entry(proxy)
        snapshot = self._snapshot(entry)
        self.cache.set(key, snapshot)
        return snapshot

    def connected(self) -> dict[str, Proxy]:
        """Stream key -> the proxy as its streams claimed and proved it."""
        return {key: entry.proxy for key, entry in self._proxies.items()}

    def snapshot_for(self, proxy: Proxy) -> Snapshot:
        """The snapshot ``proxy`` would get (connected or not)."""
        return self._snapshot(self._entry(proxy))

    def _entry(self, proxy: Proxy) -> _ProxyEntry:
        generation = self._generation
        assert generation is not None, "apply() a configuration first"
        mesh = generation.mesh
        own = build_proxy_resources(mesh, proxy)
        routes = None
        if own_route_tables(proxy):
            routes = _types(ROUTE, build_routes(mesh, proxy))
        return _ProxyEntry(
            proxy,
            _types(CLUSTER, own.own_clusters),
            _types(LISTENER, own.listeners),
            routes,
            _types(ROUTE, own.own_routes),
        )

    def _snapshot(self, entry: _ProxyEntry, check: bool | None = None) -> Snapshot:
        generation = self._generation
        assert generation is not None
        if entry.keys is None or entry.keys_epoch != self._keys_epoch:
            mesh = generation.mesh
            entry.keys = (routes_key(mesh, entry.proxy), scope_key(mesh, entry.proxy))
            entry.keys_epoch = self._keys_epoch
        route_key, scope = entry.keys
        shared = self._scoped_clusters(entry.proxy, scope)
        if entry.merged is None or entry.merged[0] is not shared:
            entry.merged = (shared, merge_types(shared, entry.own_clusters))
        routes = (
            entry.routes if entry.routes is not None else self._route_table(entry.proxy, route_key)
        )
        if entry.merged_routes is None or entry.merged_routes[0] is not routes:
            entry.merged_routes = (routes, merge_types(routes, entry.own_routes))
        snapshot = Snapshot(
            {
                CLUSTER: entry.merged[1],
                ENDPOINT: generation.endpoints_for(entry.proxy),
                LISTENER: entry.listeners,
                ROUTE: entry.merged_routes[1],
                SECRET: with_credentials(
                    generation.mesh,
                    entry.proxy,
                    self.secrets_for(entry.proxy),
                    entry.listeners,
                    entry.merged[1],
                ),
            },
            withheld=_NO_SECRETS if entry.proxy.proven_identity is None else None,
        )
        if _checking() if check is None else check:
            _check(entry.proxy, snapshot)
        return snapshot

    def _route_table(self, proxy: Proxy, key: tuple[object, ...]) -> TypeResources:
        """The sidecar's route table, shared by every proxy with its routes_key;
        during apply() built from the previous configuration's table."""
        generation = self._generation
        assert generation is not None
        table = self._tables.get(key)
        if table is None:
            previous = self._previous_tables.get(key)
            changed = generation.impact.routes if previous is not None else None
            table = build_sidecar_route_table(generation.mesh, proxy, previous, changed)
            self._tables[key] = table
        return table.resources

    def _scoped_clusters(self, proxy: Proxy, scope: str) -> TypeResources:
        """The mesh-wide clusters this proxy's Sidecar lets it see: a subset of
        the shared encoded chunks, never re-encoded, cached per Sidecar."""
        generation = self._generation
        assert generation is not None
        if not scope:
            return generation.clusters
        found = self._scopes.get(scope)
        if found is None or found[0] is not generation.clusters:
            base = generation.clusters
            names = [n for n in base.chunks if cluster_in_scope(generation.mesh, proxy, n)]
            found = self._scopes[scope] = (base, base.subset(names, scope))
        return found[1]

    def secrets_for(self, proxy: Proxy) -> TypeResources:
        """``default`` + ``ROOTCA`` for the identity the proxy's client
        certificate proved, and only while that is still its workload's
        service account; none otherwise. Encoded once per issued
        certificate and shared by that identity's proxies."""
        proven = proxy.proven_identity
        generation = self._generation
        if (
            proven is None
            or generation is None
            or proven != generation.mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
        ):
            return _EMPTY_SECRETS
        identity = self._certificate(proven)
        if identity is None:
            return _EMPTY_SECRETS
        found = self._secrets.get(identity.spiffe_id)
        if found is None or found[0] != identity.serial:
            secrets = build_secrets(
                identity.cert_chain_pem, identity.private_key_pem, identity.trust_bundle_pem
            )
            found = self._secrets[identity.spiffe_id] = (identity.serial, _types(SECRET, secrets))
        return found[1]

    def _certificate(self, spiffe_id: str) -> IssuedIdentity | None:
        memo = self._certificates
        if memo is not None and spiffe_id in memo:
            return memo[spiffe_id]
        found = self.identities.get(spiffe_id) if self.issue else self.identities.peek(spiffe_id)
        if memo is not None:
            memo[spiffe_id] = found
        return found

    def rotate_certificates(self) -> int:
        """Re-issue certificates past half their life and push the new secrets
        (an SDS-only push: nothing else in those snapshots changes)."""
        rotated = set(self.identities.rotate_due())
        if not rotated or self._generation is None:
            return 0
        changed = 0
        check = _checking()
        for key, entry in list(self._proxies.items()):
            if entry.proxy.proven_identity in rotated:
                changed += self.cache.set(key, self._snapshot(entry, check))
        log.info("rotated %d certificates; %d proxies updated", len(rotated), changed)
        return changed

    # -- admission (sailplane.xds.AdmissionHooks) and NACKs -----------------

    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        await self.ready.wait()
        mesh = self.mesh
        assert mesh is not None
        proxy = admitted_proxy(node, peer.certificate_pem, mesh)
        key = self._keys.key_for(proxy)
        self.admit(proxy, key)
        self._streams[key] = self._streams.get(key, 0) + 1
        event(
            log,
            logging.INFO,
            "proxy.connect",
            f"proxy {proxy.id} connected",
            proxy=proxy.id,
            peer=str(peer),
            role=proxy.role.value,
            key=key,
        )
        return key

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
            self._keys.forget(node_id)
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


_EMPTY_SECRETS = TypeResources.build(SECRET, [])
_NO_SECRETS = {
    SECRET: "secrets are served only on the mTLS xDS port (15012), to the identity "
    "its client certificate proves; this stream is plaintext"
}


# Set to "1" (the test suite does, in tests/conftest.py), every snapshot the
# Controller builds is checked for dangling references (Snapshot.consistent),
# and one raises. Off by default: the check decodes resources (each shared
# object once, but every proxy's own ones).
CHECK_SNAPSHOTS = "SAILPLANE_CHECK_SNAPSHOTS"


def _checking() -> bool:
    return os.environ.get(CHECK_SNAPSHOTS) == "1"


def _check(proxy: Proxy, snapshot: Snapshot) -> None:
    problems = consistency_problems(snapshot)
    if problems:
        raise AssertionError(f"proxy {proxy.id}: inconsistent snapshot: {'; '.join(problems)}")


def _types(type_url: str, messages: object, name_field: str = "name") -> TypeResources:
    items = [(getattr(m, name_field), m) for m in messages]  # type: ignore[attr-defined]
    return TypeResources.build(type_url, items)
