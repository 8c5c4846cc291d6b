"""``sailplane demo``: the weather mesh on this machine, and a view of it.

Order of events: choose the capture mode (transparent as root, else
proxy), prepare the config dir (a copy of the example with loopback or pod
addresses, unless the user gave one), make the pods (transparent: one
network namespace per workload, see pods.py), start the control plane (in
this process, on a thread of its own, so the view reads its state directly),
write one bootstrap per WorkloadEntry with a certificate for the mTLS xDS
port, capture each sidecar's traffic (transparent), start the apps and one
Envoy per workload, wait until traffic flows through the ingress, then run
the clients and draw a frame four times a second until --duration or Ctrl-C.
Everything started is stopped in a ``finally``, whatever happened.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sailplane.ca import CAError, CertificateAuthority, load_or_create_authority
from sailplane.config.loader import config_files, load_dir
from sailplane.demo import pods
from sailplane.demo.bootstraps import ProxyAddresses, mint_credentials, write_bootstraps
from sailplane.demo.capturemode import (
    PROXY_GID,
    CaptureChoice,
    CaptureMode,
    choose,
    in_place,
    inside,
    make_pods,
)
from sailplane.demo.layout import (
    POD_SUBNETS,
    Placement,
    busy,
    copy_with_addresses,
    free_network,
    placements,
    pod_addresses,
    pod_subnet,
)
from sailplane.demo.plane import ChangeLog, PlaneThread
from sailplane.demo.processes import (
    Supervisor,
    answers,
    app_script,
    envoy_binary,
    listens,
    preferred_port,
    signals_ignored,
    signals_interrupt,
)
from sailplane.demo.screen import LEGACY_TARGET, Screen
from sailplane.demo.state import instances
from sailplane.demo.traffic import Client, Tally, frontend_outcome
from sailplane.errors import DemoError
from sailplane.model.mesh import MeshConfig
from sailplane.server.plane import ControlPlane, ServeOptions, embedded_example
from sailplane.translate.proxy import Capture

FRONTEND_APP = "weather-frontend"
MESH_RATE = 5.0  # requests per second to the frontend
LEGACY_RATE = 2.0
STARTUP_TIMEOUT = 60.0


@dataclass
class DemoOptions:
    config_dir: Path | None = None
    duration: float | None = None
    rate: float = 50.0
    plain: bool = True
    capture: CaptureChoice = CaptureChoice.AUTO
    authority: CertificateAuthority | None = None
    # Without ``authority``: makes the CA in a directory, the demo's temporary
    # one (a demo must not leave a CA behind, nor reuse the user's).
    new_authority: Callable[[Path], CertificateAuthority] | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)


def run_demo(options: DemoOptions) -> int:
    """Run until ``options.duration`` or Ctrl-C (exit 0); 1 if it cannot start."""
    work = Path(tempfile.mkdtemp(prefix="sailplane-demo-"))
    try:
        with signals_interrupt():
            return Demo(options, work).run()
    except (DemoError, CAError) as exc:
        print(f"sailplane demo: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Demo:
    def __init__(self, options: DemoOptions, work: Path) -> None:
        self.options = options
        self.work = work
        self.supervisor = Supervisor(work / "logs")
        self.tally = Tally()
        self.clients: list[Client] = []
        self.labels: dict[str, str] = {}
        self.plane_thread: PlaneThread | None = None
        self.changes = ChangeLog()
        self.gateway: Placement | None = None
        self.ingress_url = "-"
        self.metrics_url = "-"
        self.pods: pods.PodNetwork | None = None
        self.xds_host = "127.0.0.1"
        self.mode = CaptureMode(False)
        self.screen = Screen(self)

    def say(self, text: str = "") -> None:
        print(text, file=self.options.out, flush=True)

    # -- preparation -------------------------------------------------------

    def prepare_config_dir(self) -> Path:
        """The directory to serve and watch: --config-dir if it has YAML, else
        a copy of the example with loopback addresses (into --config-dir if
        given, so it stays)."""
        given = self.options.config_dir
        if given is not None and given.exists() and config_files(given):
            return given
        target = given if given is not None else self.work / "mesh"
        source = embedded_example()
        result = load_dir(source)
        if result.mesh is None:
            raise DemoError(f"the embedded example does not load: {result.diagnostics}")
        if self.mode.transparent:
            subnet = pods.free_subnet(POD_SUBNETS)
            addresses = pod_addresses(result.mesh, subnet)
        else:
            addresses = free_network(result.mesh)
        copy_with_addresses(source, target, addresses)
        if given is not None:
            kind = "pod" if self.mode.transparent else "loopback"
            self.say(f"wrote the weather example, with {kind} addresses, into {given}")
        return target

    def load(self, config_dir: Path) -> tuple[MeshConfig, list[Placement]]:
        result = load_dir(config_dir)
        if result.mesh is None:
            lines = "\n".join(d.format() for d in result.errors)
            raise DemoError(f"{config_dir} does not load:\n{lines}")
        try:
            if self.mode.transparent:
                pods.free_subnet([pod_subnet(result.mesh)])
            where = placements(result.mesh, in_pods=self.mode.transparent)
        except DemoError as exc:
            raise DemoError(f"{config_dir}: {exc}") from None
        taken = busy(a for p in where for a in p.sockets())
        if taken:
            listed = ", ".join(f"{h}:{p}" for h, p in taken[:5])
            raise DemoError(f"already in use: {listed} (is another demo running?)")
        return result.mesh, where

    # -- processes ---------------------------------------------------------

    def authority(self) -> CertificateAuthority:
        """--ca-dir's (or --ca-cert's) CA if given, else a new one in the
        demo's temporary directory, removed with it."""
        if self.options.authority is not None:
            return self.options.authority
        directory = self.work / "ca"
        if self.options.new_authority is not None:
            return self.options.new_authority(directory)
        return load_or_create_authority(directory)

    def start_plane(self, config_dir: Path) -> ControlPlane:
        host = "127.0.0.1"
        # Pods reach this namespace at their link's host end, and only the
        # mTLS xDS port is there.
        pod_side = self.pods.host_ip if self.pods is not None else None
        secure = pod_side or host
        serve = ServeOptions(
            config_dir=config_dir,
            xds_address=(host, preferred_port(host, 15010)),
            secure_xds_address=(secure, preferred_port(secure, 15012)),
            monitor_address=(host, preferred_port(host, 15014)),
            authority=self.authority(),
        )
        logging.getLogger("sailplane.config").addHandler(self.changes)
        self.plane_thread = PlaneThread(serve)
        plane = self.plane_thread.start()
        self.xds_host = secure
        self.metrics_url = f"http://{host}:{plane.monitor_port}/metrics"
        return plane

    def start_mesh(self, plane: ControlPlane, where: list[Placement]) -> None:
        """The apps, then one Envoy per workload, on the mTLS xDS port."""
        assert plane.secure_xds_port is not None
        by_id = {p.workload.id: p for p in where}
        certs = self.work / "certs"
        bootstraps = write_bootstraps(
            [p.workload for p in where],
            self.work / "bootstrap",
            (self.xds_host, plane.secure_xds_port),
            credentials=lambda w: mint_credentials(plane.authority, w, certs, None),
            addresses=lambda w: ProxyAddresses(
                by_id[w.id].admin, by_id[w.id].outbound, by_id[w.id].app_address
            ),
            # Whatever the WorkloadEntries' interceptionMode says (that is
            # compose's): the mode this demo runs in.
            capture=lambda w: (
                None
                if by_id[w.id].is_gateway
                else Capture.TRANSPARENT
                if self.mode.transparent
                else Capture.PROXY
            ),
        )
        try:
            envoy = envoy_binary()
        except FileNotFoundError as exc:
            raise DemoError(str(exc)) from None
        for place in where:
            if place.is_gateway or not place.ports:
                continue
            labels = place.workload.labels
            outbound = f"http://{place.outbound[0]}:{place.outbound[1]}"
            # Captured apps know nothing of the mesh: no proxy at all.
            env = {"NO_PROXY": "*", "no_proxy": "*"} if place.in_pod else {
                "HTTP_PROXY": outbound, "NO_PROXY": ""}  # fmt: skip
            self.supervisor.start(
                f"app-{place.workload.name}",
                in_place(
                    self.pods,
                    place,
                    [
                        sys.executable,
                        str(app_script()),
                        {FRONTEND_APP: "frontend", "weather-stations": "stations"}.get(
                            labels.get("app", ""), "backend"
                        ),
                        "--listen",
                        f"{place.app_listen}:{place.ports[0]}",
                        "--version",
                        labels.get("version", "v1"),
                        "--instance",
                        place.workload.name,
                        "--service",
                        labels.get("app", place.workload.name),
                    ],
                ),
                env=env,
            )
        # Drain flags as Istio's agent sets its own: a replaced listener (an
        # mTLS mode switch) closes its old connections within a second.
        for place, bootstrap in zip(where, bootstraps, strict=True):
            self.supervisor.start(
                f"envoy-{place.workload.name}",
                in_place(self.pods, place, [
                    envoy, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
                    "--log-level", "warning", "--drain-time-s", "1",
                    "--drain-strategy", "immediate"], gid=PROXY_GID),
            )  # fmt: skip

    def wait_until(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            dead = self.supervisor.dead()
            if dead:
                child = dead[0]
                raise DemoError(
                    f"{child.name} exited with status {child.popen.returncode} while waiting "
                    f"for {what}:\n{child.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise DemoError(f"timed out after {STARTUP_TIMEOUT:.0f}s waiting for {what}")

    def start_clients(self, mesh: MeshConfig, where: list[Placement]) -> None:
        def add(client: Client, label: str) -> None:
            self.labels[client.stream] = label
            self.clients.append(client.start())

        if self.gateway is not None:
            address = (self.gateway.address, self.gateway.gateway_ports[0])
            client = Client("ingress", [address], "/api/weather", self.options.rate, self.tally)
            add(client, "ingress -> weather-backend")
        frontends = [
            (p.address, p.ports[0])
            for p in where
            if p.workload.labels.get("app") == FRONTEND_APP and p.ports
        ]
        if frontends:
            client = Client("mesh", frontends, "/", MESH_RATE, self.tally, outcome=frontend_outcome)
            add(client, "weather-frontend -> weather-backend (sidecars)")
        target = next((s for s in mesh.services if s.name == LEGACY_TARGET), None)
        ids = {w.id for w in instances(mesh, target)} if target else set()
        backends = [(p.address, p.ports[0]) for p in where if p.workload.id in ids and p.ports]
        if backends:
            client = Client(
                "legacy", backends, "/api/weather", LEGACY_RATE, self.tally, keep_alive=False
            )
            add(client, "legacy-client (no sidecar) -> weather-backend")

    # -- main ----------------------------------------------------------------

    def run(self) -> int:
        # The view reports config events itself; the console keeps warnings.
        console = [h for h in logging.getLogger().handlers if h.get_name() == "sailplane"]
        levels = [h.level for h in console]
        for handler in console:
            handler.setLevel(max(handler.level, logging.WARNING))
        try:
            return self._run()
        except KeyboardInterrupt:
            return 0
        finally:
            with signals_ignored():
                for client in self.clients:
                    client.stop(wait=False)
                self.supervisor.stop_all()  # a client waiting for an answer gets an error now
                for client in self.clients:
                    client.stop()
                if self.plane_thread is not None:
                    self.plane_thread.stop()
                if self.pods is not None:
                    self.pods.close()
                logging.getLogger("sailplane.config").removeHandler(self.changes)
                for handler, level in zip(console, levels, strict=True):
                    handler.setLevel(level)
                if self.plane_thread is not None:
                    self.say("sailplane demo: stopped; every process it started has exited.")

    def _run(self) -> int:
        self.mode = choose(self.options.capture, pods.missing())
        config_dir = self.prepare_config_dir()
        mesh, where = self.load(config_dir)
        self.say(self.mode.line())
        if self.mode.transparent:
            self.pods, where = make_pods(mesh, where)
        self.gateway = next((p for p in where if p.is_gateway), None)
        plane = self.start_plane(config_dir)
        self.start_mesh(plane, where)
        for place in where:
            if not place.is_gateway and place.ports:
                app = listens((place.app_address, place.ports[0]))
                self.wait_until(f"app {place.workload.name} to listen", inside(place, app))
        for place in where:
            admin = answers(f"http://{place.admin[0]}:{place.admin[1]}/ready")
            self.wait_until(f"Envoy {place.workload.id} to be ready", inside(place, admin))
        if self.gateway is not None:
            host, port = self.gateway.address, self.gateway.gateway_ports[0]
            self.ingress_url = f"http://{host}:{port}/api/weather"
            self.wait_until("traffic through the ingress", answers(self.ingress_url))
        for place in where:
            if place.workload.labels.get("app") == FRONTEND_APP and place.ports:
                front = f"http://{place.address}:{place.ports[0]}/"
                self.wait_until("the frontend", answers(front, timeout=5.0))
        self.start_clients(mesh, where)
        self.screen.print_where_to_look(plane, where, config_dir)
        self.tally.reset()
        return self.screen.show(plane, where)
