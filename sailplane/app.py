"""``sailplane serve``: load, translate, serve, watch, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import grpc

from sailplane.config.loader import LoadResult, load_dir
from sailplane.config.watch import DirectoryWatcher
from sailplane.controller import Controller
from sailplane.model.source import Severity
from sailplane.monitor import MonitorServer, Response
from sailplane.xds import AdsServer, SnapshotCache, StatusRegistry

log = logging.getLogger("sailplane")


def embedded_example() -> Path:
    """The weather mesh shipped inside the package (works from any directory)."""
    return Path(str(resources.files("sailplane") / "examples" / "weather" / "mesh"))


@dataclass
class ServeOptions:
    config_dir: Path
    xds_address: tuple[str, int] | None = ("0.0.0.0", 15010)
    monitor_address: tuple[str, int] = ("0.0.0.0", 15014)
    debounce_quiet: float = 0.1
    debounce_max: float = 1.0
    watch: bool = True


class ControlPlane:
    """One running control plane; start(), then stop(). Tests embed it directly."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.cache = SnapshotCache()
        self.status = StatusRegistry()
        self.controller = Controller(self.cache)
        self.ads = AdsServer(self.cache, self.controller, self.status)
        self.monitor = MonitorServer()
        self.grpc_server: grpc.aio.Server | None = None
        self.xds_port: int | None = None
        self.monitor_port: int | None = None
        self.last_result: LoadResult | None = None
        self._logged: set[str] = set()
        self._watcher: DirectoryWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.applied = 0  # configurations put in force so far
        self._routes()

    # -- configuration -----------------------------------------------------

    def reload(self) -> bool:
        """Load the config dir; apply it if it parses. Returns whether applied."""
        result = load_dir(self.options.config_dir)
        self.last_result = result
        for diagnostic in result.diagnostics:
            line = diagnostic.format()
            if line in self._logged:
                continue  # one log line per distinct problem
            self._logged.add(line)
            level = {
                Severity.ERROR: logging.ERROR,
                Severity.WARNING: logging.WARNING,
                Severity.INFO: logging.INFO,
            }[diagnostic.severity]
            log.log(level, "%s", line)
        if result.mesh is None:
            log.error(
                "configuration in %s not applied; still serving the last good one",
                self.options.config_dir,
            )
            return False
        if self.controller.mesh is not None and self.controller.mesh.digest == result.mesh.digest:
            return False
        pushed = self.controller.apply(result.mesh)
        self.applied += 1
        log.info(
            "config applied: %d services, %d workloads, %d objects; %d proxies updated",
            len(result.mesh.services),
            len(result.mesh.workloads),
            len(result.mesh.objects),
            pushed,
        )
        return True

    async def _watch(self) -> None:
        assert self._watcher is not None
        async for _ in self._watcher.changes():
            try:
                self.reload()
            except Exception:  # never let one bad reload stop the watcher
                log.exception("reload failed; still serving the last good configuration")

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self.reload()
        opts = self.options
        if opts.xds_address is not None:
            self.grpc_server = grpc.aio.server(
                options=[
                    ("grpc.max_send_message_length", 256 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ]
            )
            self.grpc_server.add_generic_rpc_handlers([self.ads.handler()])
            host, port = opts.xds_address
            self.xds_port = self.grpc_server.add_insecure_port(f"{host}:{port}")
            await self.grpc_server.start()
            log.info("xDS (ADS, plaintext) on %s:%d", host, self.xds_port)
        _, self.monitor_port = await self.monitor.start(*opts.monitor_address)
        log.info(
            "monitor on http://%s:%d (/ready, /debug/syncz, /debug/config_dump)",
            opts.monitor_address[0],
            self.monitor_port,
        )
        if opts.watch:
            self._watcher = DirectoryWatcher(
                opts.config_dir, opts.debounce_quiet, opts.debounce_max
            )
            self._watcher.start()
            self._watch_task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self._watcher is not None:
            self._watcher.stop()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1)
        await self.monitor.stop()

    # -- monitor endpoints -------------------------------------------------

    def _routes(self) -> None:
        self.monitor.route("/ready", self._ready)
        self.monitor.route("/debug/syncz", lambda q: Response.json(self.status.to_json()))
        self.monitor.route("/debug/config_dump", self._config_dump)
        self.monitor.route("/debug/configz", self._configz)

    def _ready(self, query: dict[str, list[str]]) -> Response:
        if self.controller.mesh is None:
            return Response.text("no configuration loaded yet\n", 503)
        return Response.text("ready\n")

    def _config_dump(self, query: dict[str, list[str]]) -> Response:
        proxy = (query.get("proxy") or [""])[0]
        if not proxy:
            return Response.json(
                {"error": "give ?proxy=NAME.NAMESPACE", "connected": self.cache.node_ids()}, 400
            )
        dump = self.controller.config_dump(proxy)
        if dump is None:
            return Response.json({"error": f"unknown proxy {proxy!r}"}, 404)
        return Response.json(dump)

    def _configz(self, query: dict[str, list[str]]) -> Response:
        mesh = self.controller.mesh
        result = self.last_result
        return Response.json(
            {
                "config_dir": str(self.options.config_dir),
                "in_force": [
                    {
                        "kind": o.kind,
                        "namespace": o.namespace,
                        "name": o.name,
                        "source": f"{o.file}:{o.line}",
                    }
                    for o in (mesh.objects if mesh else ())
                ],
                "diagnostics": [d.to_json() for d in (result.diagnostics if result else ())],
                "last_load_applied": bool(result and result.mesh is not None),
            }
        )


async def serve_forever(options: ServeOptions) -> None:
    plane = ControlPlane(options)
    await plane.start()
    try:
        await asyncio.Event().wait()
    finally:
        await plane.stop()
