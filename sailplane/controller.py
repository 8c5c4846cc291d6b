"""The glue between configuration and xDS: holds the mesh in force, admits
proxies, and keeps every connected proxy's snapshot up to date.

Work is shared: mesh-wide resources are translated and encoded once per
configuration, route tables once per (namespace, port); only a proxy's own
listeners and inbound clusters are built per proxy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from sailplane.errors import UnknownProxyError
from sailplane.model.mesh import MeshConfig
from sailplane.translate import (
    MeshWide,
    Proxy,
    build_mesh_wide,
    build_proxy_resources,
    build_routes,
    proxy_from_node,
)
from sailplane.translate.build import routes_key
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

    def __init__(self, cache: SnapshotCache, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = cache
        self.clock = clock
        self.ready = asyncio.Event()
        self._generation: _Generation | None = None
        self._routes: dict[tuple[object, ...], TypeResources] = {}
        self._proxies: dict[str, Proxy] = {}
        self._streams: dict[str, int] = {}
        self.nacks: list[tuple[str, str, str, str]] = []

    @property
    def mesh(self) -> MeshConfig | None:
        return self._generation.mesh if self._generation else None

    # -- configuration -----------------------------------------------------

    def apply(self, mesh: MeshConfig) -> int:
        """Put ``mesh`` in force; returns how many proxies' snapshots changed."""
        wide = build_mesh_wide(mesh)
        self._generation = _Generation(
            mesh=mesh,
            mesh_wide=wide,
            clusters=_types(CLUSTER, wide.clusters),
            endpoints=_types(ENDPOINT, wide.endpoints, "cluster_name"),
        )
        self._routes = {}
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
                CLUSTER: merge_types(generation.clusters, _types(CLUSTER, resources.own_clusters)),
                ENDPOINT: generation.endpoints,
                LISTENER: _types(LISTENER, resources.listeners),
                ROUTE: routes,
                SECRET: _types(SECRET, resources.secrets),
            }
        )

    # -- StreamHooks -------------------------------------------------------

    async def on_connect(self, node: base_pb2.Node, peer: str) -> str:
        await self.ready.wait()
        mesh = self.mesh
        assert mesh is not None
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        proxy = proxy_from_node(node.id, metadata, mesh)
        self._proxies[proxy.id] = proxy
        self._streams[proxy.id] = self._streams.get(proxy.id, 0) + 1
        self.cache.set(proxy.id, self.snapshot_for(proxy))
        log.info("proxy %s connected from %s", proxy.id, peer)
        return proxy.id

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        log.info("proxy %s disconnected (stream %d)", node_id, stream_id)
        remaining = self._streams.get(node_id, 1) - 1
        if remaining <= 0:
            self._streams.pop(node_id, None)
            self._proxies.pop(node_id, None)
            self.cache.clear(node_id)
        else:
            self._streams[node_id] = remaining

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        log.warning(
            "proxy %s rejected %s version %s: %s", node_id, SHORT_NAMES[type_url], version, message
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
        return {
            SHORT_NAMES[t]: [
                json_format.MessageToDict(m, preserving_proto_field_name=True)
                for m in snapshot.get(t).messages.values()
            ]
            for t in SHORT_NAMES
        }


def _types(type_url: str, messages: object, name_field: str = "name") -> TypeResources:
    items = [(getattr(m, name_field), m) for m in messages]  # type: ignore[attr-defined]
    return TypeResources.build(type_url, items)
