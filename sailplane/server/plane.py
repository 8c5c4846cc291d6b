"""The running control plane: its parts wired together, and their lifecycle.

``ControlPlane`` builds the snapshot cache, the controller, the ADS server,
the CA's identity store, the access-log receiver and the monitor; ``start()``
loads the configuration (reload.py), binds the ports (refusing any that is
taken, ports.py), and starts the watcher, certificate rotation and the heap
keeper; ``stop()`` undoes it all. Tests embed it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path

import grpc

from sailplane.ca import CertificateAuthority, IdentityStore
from sailplane.ca.clock import aware_now
from sailplane.config.loader import (
    DEFAULT_MAX_FILE_SIZE,
)
from sailplane.errors import PortInUseError
from sailplane.server.controller import Controller
from sailplane.server.credentials import server_credentials
from sailplane.server.heap import HeapKeeper
from sailplane.server.ops.metrics import InstrumentedHooks, Metrics
from sailplane.server.ops.monitor import MonitorServer
from sailplane.server.ops.views import install_views
from sailplane.server.ports import check_ports_free, port_message
from sailplane.server.registration import NotifyingAdmission, Registration
from sailplane.server.reload import Reloader
from sailplane.server.syncer import Syncer
from sailplane.store import ConfigStore, DirectoryStore, EtcdStore, open_etcd
from sailplane.store.etcdclient import EtcdClient
from sailplane.store.replicas import ReplicaRecord
from sailplane.telemetry import AccessLogReceiver, AccessLogWriter, IstioMetrics
from sailplane.xds import AdsServer, SnapshotCache, StatusRegistry

log = logging.getLogger("sailplane")


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

# How long stop() lets calls in flight finish before cancelling them. ADS and
# access-log streams never end by themselves, so the whole grace is spent
# whenever a proxy is connected: long enough for a response already being
# written to leave, short enough that a restart is not held up (a proxy
# reconnects and is sent everything again anyway).
STOP_GRACE = 0.2

# What `sailplane serve` stops on. As PID 1 (in a container) the kernel gives
# SIGTERM no default action: without a handler `docker stop` waits, then kills.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    # etcd://HOST:PORT[,...][/PREFIX]: read the configuration there, not in config_dir.
    config_store: str | None = None
    # This replica's name in the store's registry (default HOSTNAME-PID).
    replica_name: str | None = None
    # Sync mode (with config_store): apply config_dir into the store on every
    # change, as `sailplane apply --prune` does, and serve from the store.
    sync: bool = False


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
        self.replica_name = options.replica_name or f"{socket.gethostname()}-{os.getpid()}"
        self.registration: Registration | None = None
        self.started_at = 0.0
        self.hooks = InstrumentedHooks(
            NotifyingAdmission(self.controller, self._registration_changed)
            if options.config_store
            else self.controller,
            self.metrics,
            self.heap.touch,
        )
        self.ads = AdsServer(
            self.cache, admission=self.hooks, observer=self.hooks, status=self.status
        )
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
        self.store: ConfigStore = (
            open_etcd(options.config_store, options.max_file_size)
            if options.config_store
            else DirectoryStore(
                options.config_dir,
                options.max_file_size,
                options.debounce_quiet,
                options.debounce_max,
            )
        )
        self.reloader = Reloader(
            options.config_dir,
            options.max_file_size,
            self.controller,
            self.cache,
            self.metrics,
            self.heap.applied,
            self.store,
        )
        self._watch_task: asyncio.Task[None] | None = None
        if isinstance(self.store, EtcdStore):
            # Its own client: a lease renewal never waits behind a large Range.
            self.registration = Registration(
                EtcdClient(self.store.url.endpoints, timeout=2.0, tls=self.store.url.tls),
                self.store.url.prefix,
                self.replica_name,
                self.replica_record,
                self.status.streams,
            )
        self.syncer: Syncer | None = None
        if options.sync and options.config_store:  # its own connection (see Syncer)
            self.syncer = Syncer(
                options.config_dir,
                open_etcd(options.config_store, options.max_file_size),
                self.metrics,
                options.debounce_quiet,
                options.debounce_max,
            )
        install_views(self)

    def reload(self, change_seen_at: float | None = None) -> bool:
        """Load and apply the configuration now (see :class:`Reloader`)."""
        return self.reloader.reload(change_seen_at)

    async def reload_off_loop(self, change_seen_at: float | None = None) -> bool:
        return await self.reloader.reload_off_loop(change_seen_at)

    @property
    def version(self) -> str:
        """The content hash of the configuration in force (12 hex digits)."""
        return self.reloader.version

    async def _watch(self) -> None:
        async for change in self.store.changes():
            try:
                await self.reload_off_loop(change.first_seen)
            except Exception:  # never let one bad reload stop the watcher
                log.exception("reload failed; still serving the last good configuration")
            self._registration_changed()

    def _registration_changed(self) -> None:
        if self.registration is not None:
            self.registration.changed()

    def replica_record(self) -> ReplicaRecord:
        """What this replica registers in the store (store/replicas.py)."""
        opts = self.options

        def where(address: tuple[str, int] | None, port: int | None) -> str | None:
            if address is None or port is None:
                return None
            host = address[0]
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

        return ReplicaRecord(
            name=self.replica_name,
            xds_address=where(opts.xds_address, self.xds_port),
            secure_xds_address=where(opts.secure_xds_address, self.secure_xds_port),
            monitor_address=where(opts.monitor_address, self.monitor_port),
            started=self.started_at,
            version=self.version,
            applied_at=self.reloader.applied_at,
            store_problem=self.store.problem,
        )

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
        if self.syncer is not None:  # first: the first load reads what it wrote
            await self.syncer.start()
        await self.reload_off_loop()
        opts = self.options
        if opts.xds_address is not None:
            self.grpc_server = self._grpc_server()
            self.xds_port = _add_port(self.grpc_server, "plaintext xDS", opts.xds_address)
        if opts.secure_xds_address is not None:
            self.secure_server = self._grpc_server()
            credentials = server_credentials(
                self.identities, self.authority.trust_domain, [opts.secure_xds_address[0]]
            )
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
            self.store.start()
            self._watch_task = asyncio.create_task(self._watch())
        self.started_at = time.time()
        if self.registration is not None:
            self.registration.start()

    async def _rotate_forever(self) -> None:
        """Sleep until the next certificate is due (half its life), rotate,
        push the new secrets (SDS only). Wakes at least once a minute."""
        while True:
            due = self.identities.next_rotation()
            delay = 60.0
            if due is not None:
                now = aware_now(self.authority.clock)
                delay = min(delay, max((due - now).total_seconds(), 0.05))
            log.debug("next certificate rotation in %.1fs", delay)
            await asyncio.sleep(delay)
            try:
                self.controller.rotate_certificates()
            except Exception:  # keep rotating; the next round retries
                log.exception("certificate rotation failed")

    async def stop(self) -> None:
        if self.registration is not None:  # first: the records vanish at once
            await self.registration.stop()
        if self.syncer is not None:
            await self.syncer.stop()
        for task in (self._watch_task, self._rotation_task, self._heap_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.store.stop()
        for server in (self.grpc_server, self.secure_server):
            if server is not None:
                await server.stop(grace=STOP_GRACE)
        await self.monitor.stop()
        if self.access_logs.writer is not None:
            self.access_logs.writer.close()


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
    """Serve until SIGTERM or SIGINT, then stop (see :meth:`ControlPlane.stop`)
    and return. The handlers are in place before the plane starts, so a
    signal during startup is not lost; off the main thread there are none
    and the caller cancels."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        stop.set()

    installed = []
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (ValueError, RuntimeError):  # not the main thread
            continue
        installed.append(signum)
    try:
        plane = ControlPlane(options)
        await plane.start()
        try:
            await stop.wait()
            log.info("stopping on %s", received[0].name)
        finally:
            await plane.stop()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
