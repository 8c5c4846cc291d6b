"""The views the monitor serves (``install_views``): readiness, ``/metrics``,
sync state, one proxy's resources (``sailplane status
--proxy``, like ``istioctl proxy-config``) and the dry run behind
``sailplane diff``: what a directory would change for each connected proxy.

Read-only: a dry run translates into a throwaway cache and never touches
the configuration in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from sailplane.ca import IdentityStore
from sailplane.config.assemble import InForce
from sailplane.config.loader import load_texts, max_file_size, object_changes
from sailplane.errors import UnknownProxy
from sailplane.model.source import Severity
from sailplane.server.controller import Controller
from sailplane.server.ops.metrics import CONTENT_TYPE
from sailplane.server.ops.monitor import Response
from sailplane.translate import Proxy, proxy_from_node
from sailplane.translate.proxy import bootstrap_metadata
from sailplane.xds import PUSH_ORDER, Snapshot, SnapshotCache, StatusRegistry
from sailplane.xds.types import SHORT_NAMES

if TYPE_CHECKING:
    from sailplane.server.plane import ControlPlane

log = logging.getLogger("sailplane")


def resource_version(chunk: bytes) -> str:
    """A resource's own version: the hash of its encoded bytes."""
    return hashlib.sha256(chunk).hexdigest()[:8]


def proxy_view(
    node_id: str, snapshot: Snapshot | None, status: StatusRegistry
) -> dict[str, Any] | None:
    """Every resource the proxy should have, with its version, and the sync
    state of its type on each of the proxy's streams."""
    streams = [s for s in status.streams() if s.proxy == node_id]
    if snapshot is None and not streams:
        return None
    types: dict[str, Any] = {}
    for type_url in PUSH_ORDER:
        resources = snapshot.get(type_url) if snapshot else None
        stream_states = [s.types[type_url].to_json() for s in streams if type_url in s.types]
        state = stream_states[0] if stream_states else {"state": "NOT_SENT"}
        types[SHORT_NAMES[type_url]] = {
            "version": resources.version if resources else None,
            **state,
            "resources": [
                {"name": name, "version": resource_version(chunk)}
                for name, chunk in (resources.chunks.items() if resources else ())
            ],
        }
    return {
        "proxy": node_id,
        "connected": bool(streams),
        "streams": [{"stream": s.stream_id, "peer": s.peer} for s in streams],
        "types": types,
    }


def diff_snapshots(old: Snapshot | None, new: Snapshot) -> dict[str, dict[str, list[str]]]:
    """Per type: resource names added, removed and changed; unchanged types omitted."""
    out: dict[str, dict[str, list[str]]] = {}
    for type_url in PUSH_ORDER:
        before = old.get(type_url).chunks if old else {}
        after = new.get(type_url).chunks
        change = {
            "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(n for n in after.keys() & before.keys() if after[n] != before[n]),
        }
        if any(change.values()):
            out[SHORT_NAMES[type_url]] = change
    return out


def parse_files_body(body: bytes) -> list[tuple[str, str]]:
    """``{"files": {"name.yaml": "text", ...}}`` -> ``[(name, text)]``, sorted."""
    payload = json.loads(body or b"{}")
    files = payload.get("files") if isinstance(payload, Mapping) else None
    if not isinstance(files, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise ValueError('the body must be {"files": {"NAME": "TEXT", ...}}')
    return sorted(files.items())


def dry_run(
    texts: list[tuple[str, str]],
    in_force: InForce | None,
    cache: SnapshotCache,
    connected: Mapping[str, Proxy],
    identities: IdentityStore | None = None,
) -> dict[str, Any]:
    """What applying ``texts`` would do, against the configuration in force,
    for the connected proxies (stream key -> proxy).

    ``identities`` is the running controller's, read and never written: a
    dry run issues no certificate (a proxy whose identity has none would
    get no secrets), so nothing it is sent can make the CA mint."""
    result = load_texts(texts, previous=in_force)
    diagnostics = [d.to_json() for d in result.diagnostics if d.severity is not Severity.INFO]
    if result.mesh is None:
        return {"verdict": "rejected", "diagnostics": diagnostics, "objects": [], "proxies": []}
    unchanged = in_force is not None and in_force.mesh.digest == result.mesh.digest
    controller = Controller(SnapshotCache(), identities, issue=False)
    controller.apply(result.mesh)
    proxies = []
    for key, claimed in sorted(connected.items()):
        entry: dict[str, Any] = {"proxy": key}
        try:
            proxy = proxy_from_node(claimed.id, claimed.metadata, result.mesh)
        except UnknownProxy as exc:
            entry["error"] = f"{exc}; it would keep its last configuration"
            proxies.append(entry)
            continue
        proxy = dataclasses.replace(proxy, proven_identity=claimed.proven_identity)
        entry["changes"] = diff_snapshots(cache.get(key), controller.snapshot_for(proxy))
        proxies.append(entry)
    return {
        # A dry run applies nothing: it says what applying would do.
        "verdict": "unchanged" if unchanged else "would apply",
        "diagnostics": diagnostics,
        "objects": [
            {"kind": kind, "event": event, "name": name}
            for kind, event, name in object_changes(in_force, result)
        ],
        "proxies": proxies,
    }


def install_views(plane: ControlPlane) -> None:
    """Serve ``plane``'s views on its monitor."""
    views = _Views(plane)
    monitor = plane.monitor
    monitor.route("/ready", views.ready)
    monitor.route("/metrics", views.metrics)
    monitor.route("/stats/prometheus", views.istio_metrics)
    monitor.route("/debug/syncz", views.syncz)
    monitor.route("/debug/config_dump", views.config_dump)
    monitor.route("/debug/configz", views.configz)
    monitor.route("/debug/proxyz", views.proxyz)
    monitor.post_route("/debug/diff", views.diff)


Query = dict[str, list[str]]


class _Views:
    """The monitor's answers, read from a running plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def ready(self, query: Query) -> Response:
        """Ready while a configuration is in force, also when the config store
        is down (the last good one is served): the answer says so."""
        down = self.plane.reloader.store.problem
        note = f" (config store down: {down}; serving the last good configuration)" if down else ""
        if self.plane.controller.mesh is None:
            return Response.text(f"no configuration loaded yet{note}\n", 503)
        return Response.text(f"ready{note}\n")

    def metrics(self, query: Query) -> Response:
        return Response(200, self.plane.metrics.render(), CONTENT_TYPE)

    def istio_metrics(self, query: Query) -> Response:
        return Response(200, self.plane.istio_metrics.render(), CONTENT_TYPE)

    def syncz(self, query: Query) -> Response:
        return Response.json(self.plane.status.to_json())

    def config_dump(self, query: Query) -> Response:
        proxy = (query.get("proxy") or [""])[0]
        if not proxy:
            return Response.json(
                {"error": "give ?proxy=NAME.NAMESPACE", "connected": self.plane.cache.node_ids()},
                400,
            )
        dump = config_dump(self.plane.controller, proxy)
        if dump is None:
            return Response.json({"error": f"unknown proxy {proxy!r}"}, 404)
        return Response.json(dump)

    def proxyz(self, query: Query) -> Response:
        plane = self.plane
        proxy = (query.get("proxy") or [""])[0]
        view = proxy_view(proxy, plane.cache.get(proxy), plane.status) if proxy else None
        if view is None:
            return Response.json(
                {"error": f"no connected proxy {proxy!r}", "connected": plane.cache.node_ids()},
                404 if proxy else 400,
            )
        return Response.json(view)

    async def diff(self, query: Query, body: bytes) -> Response:
        """The dry run reads and translates in a worker thread, with the
        limits of a reload (the file size limit, the alias budget)."""
        plane = self.plane
        in_force, connected = plane.reloader.in_force, dict(plane.controller.connected())
        identities = plane.controller.identities

        def run() -> dict[str, object]:
            texts = parse_files_body(body)  # JSON of up to MAX_BODY: not on the loop either
            with max_file_size(plane.options.max_file_size):
                return dry_run(texts, in_force, plane.cache, connected, identities)

        try:
            answer = await asyncio.to_thread(run)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        except Exception as exc:
            log.exception("dry run failed")
            return Response.json({"error": f"dry run failed: {type(exc).__name__}: {exc}"}, 500)
        return Response.json(answer)

    def configz(self, query: Query) -> Response:
        reloader = self.plane.reloader
        applied, last = reloader.applied_result, reloader.last_result
        records = applied.objects if applied else ()
        store: dict[str, object] = {}
        if self.plane.options.config_store:
            problem = reloader.store.problem
            store = {
                "config_store": {"url": reloader.source, "up": not problem, "problem": problem}
            }
        registration = self.plane.registration
        if registration is not None:
            store["registration"] = {
                "registered": bool(registration.lease) and registration.problem is None,
                "problem": registration.problem,
            }
        if self.plane.syncer is not None:  # sync mode: DIR -> the store
            store["sync"] = self.plane.syncer.view()
        return Response.json(
            {
                "replica": self.plane.replica_name,
                **store,
                "config_dir": reloader.source,
                "version": reloader.version,
                "applied_at": reloader.applied_at,
                "last_load_applied": bool(last and reloader.last_load_applied),
                "in_force": [r.to_json() for r in records if r.state in ("active", "retained")],
                "not_in_force": [
                    r.to_json() for r in records if r.state not in ("active", "retained")
                ],
                "diagnostics": [d.to_json() for d in (last.diagnostics if last else ())],
            }
        )


def config_dump(controller: Controller, node_id: str) -> dict[str, list[dict[str, object]]] | None:
    """A proxy's snapshot as JSON (private keys redacted): the connected
    one's, or what a WorkloadEntry's proxy would get; None for neither."""
    snapshot = controller.cache.get(node_id)
    if snapshot is None:
        mesh = controller.mesh
        if mesh is None or node_id not in mesh.workloads_by_id:
            return None
        metadata = bootstrap_metadata(mesh.workloads_by_id[node_id])
        snapshot = controller.snapshot_for(proxy_from_node(node_id, metadata, mesh))
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
