"""``sailplane serve``: load, translate, serve, watch, until stopped.

Configuration changes follow one rule: what is served is always a complete,
validated configuration. A directory that does not parse changes nothing;
an object that does not validate is left out (or keeps its last good
version, see config/assemble.py); every problem is logged once, counted on
``/metrics`` and listed at ``/debug/configz``.

Reading and parsing the directory (and the monitor's dry runs) happen in a
worker thread, so that ADS streams, pushes and the monitor keep answering
while a large or hostile file is read; only applying the result to the
controller runs on the event loop. Loads are bounded: a size limit per file
(``--max-file-size``), a budget for alias expansion (config/yamldoc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import grpc

from sailplane.ca import CertificateAuthority, IdentityStore
from sailplane.config.assemble import InForce
from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import (
    DEFAULT_MAX_FILE_SIZE,
    LoadResult,
    load_dir,
    max_file_size,
    object_changes,
)
from sailplane.config.watch import DirectoryWatcher
from sailplane.controller import Controller
from sailplane.debug import dry_run, parse_files_body, proxy_view
from sailplane.heap import HeapKeeper
from sailplane.logs import event
from sailplane.metrics import CONTENT_TYPE, InstrumentedHooks, Metrics
from sailplane.model.source import Diagnostic, Position, Severity
from sailplane.monitor import MonitorServer, Response
from sailplane.ports import PortInUseError, check_ports_free, port_message
from sailplane.secure import server_credentials
from sailplane.telemetry import AccessLogReceiver, AccessLogWriter, IstioMetrics
from sailplane.xds import PUSH_ORDER, AdsServer, SnapshotCache, StatusRegistry

log = logging.getLogger("sailplane")
config_log = logging.getLogger("sailplane.config")

_LEVELS = {Severity.ERROR: logging.ERROR, Severity.WARNING: logging.WARNING}


# gRPC server settings for a control plane with thousands of long-lived streams.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # Calls that arrived before the server asked for them wait in a queue;
    # past its limit (1,000, hard 3,000 by default) gRPC sheds new calls with
    # RESOURCE_EXHAUSTED. 2,000 proxies connecting at once lost ~120 streams
    # that way; a stream is cheap, the limit is not what protects us (the
    # push throttle is).
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 50_000),
    # Ping idle connections: a proxy that vanished without a FIN (or stopped
    # reading) is found and its stream ended within 40 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Never share a port with another process (see ports.py).
    ("grpc.so_reuseport", 0),
]


def embedded_example() -> Path:
    """The weather mesh shipped inside the package (works from any directory)."""
    return Path(str(resources.files("sailplane") / "examples" / "weather" / "mesh"))


@dataclass
class ServeOptions:
    config_dir: Path
    # Plaintext xDS serves configuration without secrets; loopback unless
    # asked. The monitor's debug views are for the operator: loopback too.
    xds_address: tuple[str, int] | None = ("127.0.0.1", 15010)
    monitor_address: tuple[str, int] = ("127.0.0.1", 15014)
    debounce_quiet: float = 0.1
    debounce_max: float = 1.0
    watch: bool = True
    secure_xds_address: tuple[str, int] | None = None
    # None: an in-memory CA (development and tests); `sailplane serve` passes
    # the one in the CA state directory.
    authority: CertificateAuthority | None = None
    cert_ttl: timedelta = timedelta(hours=24)
    # Where the `sailplane` access log provider writes JSON lines ("-": stdout).
    access_log_file: str = "-"
    # Larger configuration files are not read (an error names them).
    max_file_size: int = DEFAULT_MAX_FILE_SIZE


class ControlPlane:
    """One running control plane; start(), then stop(). Tests embed it directly."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.cache = SnapshotCache()
        self.status = StatusRegistry()
        self.metrics = Metrics()
        if options.authority is None:
            log.warning("no CA given: using an in-memory CA (certificates change on restart)")
        self.authority = options.authority or CertificateAuthority.create_self_signed()
        self.identities = IdentityStore(self.authority, ttl=options.cert_ttl)
        self.controller = Controller(
            self.cache, self.identities, trust_domain=self.authority.trust_domain
        )
        self.heap = HeapKeeper()
        self.hooks = InstrumentedHooks(self.controller, self.metrics, self.heap.touch)
        self.ads = AdsServer(self.cache, self.hooks, self.status)
        # Istio's standard metrics, from the proxies' access log streams.
        self.istio_metrics = IstioMetrics()
        self.access_logs = AccessLogReceiver(
            lambda: self.controller.mesh,
            self.istio_metrics,
            AccessLogWriter(options.access_log_file),
        )
        self.metrics.registry.register(self.istio_metrics)
        self.metrics.registry.register(self.access_logs.stats)
        self.monitor = MonitorServer()
        self.grpc_server: grpc.aio.Server | None = None
        self.secure_server: grpc.aio.Server | None = None
        self.secure_xds_port: int | None = None
        self._rotation_task: asyncio.Task[None] | None = None
        self._heap_task: asyncio.Task[None] | None = None
        self.xds_port: int | None = None
        self.monitor_port: int | None = None
        self.last_result: LoadResult | None = None  # the last load, applied or not
        self.last_load_applied = False  # whether what is in force is the last load
        # One load at a time: the document cache is not thread-safe.
        self._loading = asyncio.Lock()
        self.applied_result: LoadResult | None = None  # the load in force
        self.in_force: InForce | None = None
        # Parsed documents and objects of the last load: a reload re-parses only what changed.
        self.documents = DocumentCache()
        self.applied_at: float | None = None
        self._reported: set[str] = set()
        self._watcher: DirectoryWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.applied = 0  # configurations put in force so far
        self._routes()

    # -- configuration -----------------------------------------------------

    def reload(self, change_seen_at: float | None = None) -> bool:
        """Load the config dir; apply it if it parses. Returns whether applied.

        ``change_seen_at`` (monotonic) is when the file change was first seen,
        for the convergence-time histogram. Blocks while it reads: the running
        server uses :meth:`reload_off_loop`."""
        started = time.monotonic()
        return self._apply(self._load(), started, change_seen_at)

    async def reload_off_loop(self, change_seen_at: float | None = None) -> bool:
        """:meth:`reload`, reading and parsing in a worker thread."""
        async with self._loading:
            started = time.monotonic()
            result = await asyncio.to_thread(self._load)
            return self._apply(result, started, change_seen_at)

    def _load(self) -> LoadResult:
        """Read the directory; never raises (a failure is a diagnostic)."""
        try:
            return load_dir(
                self.options.config_dir,
                previous=self.in_force,
                cache=self.documents,
                max_file_size=self.options.max_file_size,
            )
        except Exception as exc:  # a bug: reported like any problem, never a crash
            log.exception("loading %s failed", self.options.config_dir)
            self.documents = DocumentCache()  # it may be half-updated
            return LoadResult(None, (self._failure("loading", exc),))

    def _failure(self, what: str, exc: BaseException) -> Diagnostic:
        return Diagnostic(
            str(self.options.config_dir),
            Position(1, 1),
            f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}",
        )

    def _apply(self, result: LoadResult, started: float, change_seen_at: float | None) -> bool:
        try:
            return self._apply_result(result, started, change_seen_at)
        except Exception as exc:  # never let one bad reload stop the server
            # (The controller may have put it in force for some proxies already.)
            log.exception("applying the configuration failed part way")
            self.last_load_applied = False
            self.last_result = dataclasses.replace(
                result, mesh=None, diagnostics=(*result.diagnostics, self._failure("applying", exc))
            )
            return False

    def _apply_result(
        self, result: LoadResult, started: float, change_seen_at: float | None
    ) -> bool:
        self.last_result = result
        self.last_load_applied = False
        news = self._report(result)
        if result.mesh is None:
            self.metrics.reloads.labels("rejected").inc()
            serving = (
                "still serving the last good one"
                if self.controller.mesh is not None
                else "there is no last good one: nothing is served until the directory loads"
            )
            event(
                config_log,
                logging.ERROR if news else logging.DEBUG,  # said already, unless new
                "config.rejected",
                f"configuration not applied; {serving}",
                errors=len(result.errors),
                dir=str(self.options.config_dir),
            )
            return False
        if self.controller.mesh is not None and self.controller.mesh.digest == result.mesh.digest:
            self.metrics.reloads.labels("unchanged").inc()
            self.last_load_applied = True
            return False
        before = {n: self.cache.get(n) for n in self.cache.node_ids()}
        updated = self.controller.apply(result.mesh)
        changed = [
            node_id
            for node_id, old in before.items()
            if (new := self.cache.get(node_id)) is not None
            and (old is None or any(old.version(t) != new.version(t) for t in PUSH_ORDER))
        ]
        self.metrics.snapshots_changed(changed, change_seen_at)
        changes = object_changes(self.in_force, result)
        for kind, what, _ in changes:
            self.metrics.config_events.labels(kind, what).inc()
        self.applied_result, self.in_force = result, result.in_force()
        self.last_load_applied = True
        self.applied += 1
        self.heap.touch()
        self.applied_at = time.time()
        self.metrics.reloads.labels("applied").inc()
        self.metrics.last_applied.set(self.applied_at)
        states = Counter(o.state for o in result.objects)
        events = Counter(what for _, what, _ in changes)
        event(
            config_log,
            logging.INFO,
            "config.applied",
            "config applied",
            version=self.version,
            objects=states["active"] + states["retained"],
            retained=states["retained"],
            rejected=states["rejected"],
            services=len(result.mesh.services),
            workloads=len(result.mesh.workloads),
            added=events["add"],
            updated=events["update"],
            deleted=events["delete"],
            proxies_updated=updated,
            ms=round((time.monotonic() - started) * 1000, 1),
            detail={"changes": [f"{what} {kind} {name}" for kind, what, name in changes]},
        )
        return True

    @property
    def version(self) -> str:
        mesh = self.controller.mesh
        return mesh.digest[:12] if mesh else ""

    def _report(self, result: LoadResult) -> int:
        """Log each problem once, when it appears; count the new errors.
        Returns how many problems are new."""
        current = {d.format(): d for d in result.diagnostics}
        new_errors = news = 0
        for line, diagnostic in current.items():
            if line in self._reported:
                continue
            news += 1
            new_errors += diagnostic.severity is Severity.ERROR
            event(
                config_log,
                _LEVELS.get(diagnostic.severity, logging.INFO),
                f"config.{diagnostic.severity.value}",
                line,
                detail=diagnostic.to_json(),
            )
        if new_errors:
            self.metrics.config_errors.inc(new_errors)
        # A load that does not parse says nothing about the other problems.
        self._reported = set(current) | (self._reported if result.mesh is None else set())
        if result.mesh is not None:
            self.metrics.count_objects(Counter((o.kind, o.state) for o in result.objects))
        return news

    async def _watch(self) -> None:
        assert self._watcher is not None
        async for burst in self._watcher.changes():
            try:
                await self.reload_off_loop(burst.first_seen)
            except Exception:  # never let one bad reload stop the watcher
                log.exception("reload failed; still serving the last good configuration")

    # -- lifecycle ---------------------------------------------------------

    def _grpc_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers([self.ads.handler(), self.access_logs.handler()])
        return server

    def _addresses(self) -> list[tuple[str, tuple[str, int]]]:
        opts = self.options
        wanted = [
            ("plaintext xDS", opts.xds_address),
            ("mTLS xDS", opts.secure_xds_address),
            ("monitor", opts.monitor_address),
        ]
        return [(what, address) for what, address in wanted if address is not None]

    async def start(self) -> None:
        """Raises :class:`PortInUseError` before binding or starting anything
        if a port is taken."""
        check_ports_free(self._addresses())
        self.heap.configure()
        await self.reload_off_loop()
        opts = self.options
        if opts.xds_address is not None:
            self.grpc_server = self._grpc_server()
            self.xds_port = _add_port(self.grpc_server, "plaintext xDS", opts.xds_address)
        if opts.secure_xds_address is not None:
            self.secure_server = self._grpc_server()
            credentials = server_credentials(self.identities, self.authority.trust_domain)
            self.secure_xds_port = _add_port(
                self.secure_server, "mTLS xDS", opts.secure_xds_address, credentials
            )
        try:
            _, self.monitor_port = await self.monitor.start(*opts.monitor_address)
        except OSError as exc:  # taken between the check and now
            raise PortInUseError(
                port_message("monitor", *opts.monitor_address, exc.strerror)
            ) from exc
        for server in (self.grpc_server, self.secure_server):
            if server is not None:
                await server.start()
        if opts.xds_address is not None:
            log.info(
                "xDS (ADS, plaintext, no secrets) on %s:%d", opts.xds_address[0], self.xds_port
            )
        if opts.secure_xds_address is not None:
            log.info("xDS (ADS, mTLS) on %s:%d", opts.secure_xds_address[0], self.secure_xds_port)
        self._rotation_task = asyncio.create_task(self._rotate_forever())
        self._heap_task = asyncio.create_task(self.heap.run())
        log.info(
            "monitor on http://%s:%d (%s)",
            opts.monitor_address[0],
            self.monitor_port,
            ", ".join(self.monitor.endpoints()),
        )
        if opts.watch:
            self._watcher = DirectoryWatcher(
                opts.config_dir, opts.debounce_quiet, opts.debounce_max
            )
            self._watcher.start()
            self._watch_task = asyncio.create_task(self._watch())

    async def _rotate_forever(self) -> None:
        """Sleep until the next certificate is due (half its life), rotate,
        push the new secrets (SDS only). Wakes at least once a minute."""
        while True:
            due = self.identities.next_rotation()
            delay = 60.0
            if due is not None:
                delay = min(delay, max((due - datetime.now(UTC)).total_seconds(), 0.05))
            log.debug("next certificate rotation in %.1fs", delay)
            await asyncio.sleep(delay)
            try:
                self.controller.rotate_certificates()
            except Exception:  # keep rotating; the next round retries
                log.exception("certificate rotation failed")

    async def stop(self) -> None:
        for task in (self._watch_task, self._rotation_task, self._heap_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._watcher is not None:
            self._watcher.stop()
        for server in (self.grpc_server, self.secure_server):
            if server is not None:
                await server.stop(grace=1)
        await self.monitor.stop()
        if self.access_logs.writer is not None:
            self.access_logs.writer.close()

    # -- monitor endpoints -------------------------------------------------

    def _routes(self) -> None:
        self.monitor.route("/ready", self._ready)
        self.monitor.route("/metrics", self._metrics)
        self.monitor.route(
            "/stats/prometheus",
            lambda q: Response(200, self.istio_metrics.render(), CONTENT_TYPE),
        )
        self.monitor.route("/debug/syncz", lambda q: Response.json(self.status.to_json()))
        self.monitor.route("/debug/config_dump", self._config_dump)
        self.monitor.route("/debug/configz", self._configz)
        self.monitor.route("/debug/proxyz", self._proxyz)
        self.monitor.post_route("/debug/diff", self._diff)

    def _ready(self, query: dict[str, list[str]]) -> Response:
        if self.controller.mesh is None:
            return Response.text("no configuration loaded yet\n", 503)
        return Response.text("ready\n")

    def _metrics(self, query: dict[str, list[str]]) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

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

    def _proxyz(self, query: dict[str, list[str]]) -> Response:
        proxy = (query.get("proxy") or [""])[0]
        view = proxy_view(proxy, self.cache.get(proxy), self.status) if proxy else None
        if view is None:
            return Response.json(
                {"error": f"no connected proxy {proxy!r}", "connected": self.cache.node_ids()},
                404 if proxy else 400,
            )
        return Response.json(view)

    async def _diff(self, query: dict[str, list[str]], body: bytes) -> Response:
        """The dry run reads and translates in a worker thread, with the
        limits of a reload (the file size limit, the alias budget)."""
        in_force, connected = self.in_force, dict(self.controller.connected())

        def run() -> dict[str, object]:
            texts = parse_files_body(body)  # JSON of up to MAX_BODY: not on the loop either
            with max_file_size(self.options.max_file_size):
                return dry_run(texts, in_force, self.cache, connected, self.controller.identities)

        try:
            answer = await asyncio.to_thread(run)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        except Exception as exc:
            log.exception("dry run failed")
            return Response.json({"error": f"dry run failed: {type(exc).__name__}: {exc}"}, 500)
        return Response.json(answer)

    def _configz(self, query: dict[str, list[str]]) -> Response:
        applied, last = self.applied_result, self.last_result
        records = applied.objects if applied else ()
        return Response.json(
            {
                "config_dir": str(self.options.config_dir),
                "version": self.version,
                "applied_at": self.applied_at,
                "last_load_applied": bool(last and self.last_load_applied),
                "in_force": [r.to_json() for r in records if r.state in ("active", "retained")],
                "not_in_force": [
                    r.to_json() for r in records if r.state not in ("active", "retained")
                ],
                "diagnostics": [d.to_json() for d in (last.diagnostics if last else ())],
            }
        )


def _add_port(
    server: grpc.aio.Server,
    what: str,
    address: tuple[str, int],
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    host, port = address
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if credentials is None:
            bound: int = server.add_insecure_port(target)
        else:
            bound = server.add_secure_port(target, credentials)
        return bound
    except RuntimeError as exc:  # taken between the check and now
        raise PortInUseError(port_message(what, host, port, None)) from exc


async def serve_forever(options: ServeOptions) -> None:
    plane = ControlPlane(options)
    await plane.start()
    try:
        await asyncio.Event().wait()
    finally:
        await plane.stop()
