"""What ``sailplane demo`` shows: where to look once the mesh runs, then a
frame four times a second (a live view, or one plain line a second) and a
summary at the end. Reads the plane's state directly (same process)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from sailplane.demo.layout import Placement
from sailplane.demo.state import configured_split, tls_state
from sailplane.demo.view import (
    Frame,
    ServiceTLS,
    StreamView,
    WorkloadRow,
    plain_line,
    rich_view,
    summary,
    where_to_look,
)
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Severity
from sailplane.server.plane import ControlPlane

if TYPE_CHECKING:
    from sailplane.demo.run import Demo

LEGACY_TARGET = "weather-backend"  # the service the legacy client calls directly
TICK = 0.25


def objects_in_force(plane: ControlPlane) -> frozenset[tuple[object, str]]:
    """Every object in force, by key and content digest: what the traffic
    follows (the mesh's version also changes with a rejected edit)."""
    in_force = plane.reloader.in_force
    if in_force is None:
        return frozenset()
    return frozenset((key, record.digest) for key, record in in_force.records.items())


class Screen:
    """The demo's output, drawn from the running demo's state."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self._tls: list[ServiceTLS] = []
        self._tls_mesh: MeshConfig | None = None
        self._tls_at = 0.0

    def print_where_to_look(
        self, plane: ControlPlane, where: list[Placement], config_dir: Path
    ) -> None:
        pids = {c.name: c.pid for c in self.demo.supervisor.children}
        rows = [
            WorkloadRow(
                p.workload.id,
                p.address,
                "-" if p.is_gateway else f"{p.app_listen}:{p.ports[0]}",
                f"{p.admin[0]}:{p.admin[1]}" if p.netns is None else f"pod {p.netns}",
                [
                    pids[n]
                    for n in (f"envoy-{p.workload.name}", f"app-{p.workload.name}")
                    if n in pids
                ],
            )
            for p in where
        ]
        lines = where_to_look(
            config_dir=config_dir,
            ingress_url=self.demo.ingress_url,
            metrics_url=self.demo.metrics_url,
            xds_ports=(plane.xds_port or 0, plane.secure_xds_port or 0),
            monitor_port=plane.monitor_port or 0,
            rows=rows,
            legacy_target=LEGACY_TARGET if "legacy" in self.demo.labels else None,
            duration=self.demo.options.duration,
            pods=self.demo.pods.prefix if self.demo.pods is not None else None,
            xds_host=self.demo.xds_host,
        )
        for line in lines:
            self.demo.say(line)

    def tls_rows(self, mesh: MeshConfig | None, where: list[Placement]) -> list[ServiceTLS]:
        """The mTLS rows, refreshed once a second or when the mesh changes
        (they ask every sidecar's admin for its stats)."""
        now = time.monotonic()
        if mesh is not self._tls_mesh or now - self._tls_at >= 1.0:
            self._tls = tls_state(mesh, where) if mesh else []
            self._tls_mesh, self._tls_at = mesh, now
        return self._tls

    def frame(self, plane: ControlPlane, where: list[Placement], elapsed: float) -> Frame:
        mesh = plane.controller.mesh
        split = configured_split(mesh, self.demo.gateway) if mesh else []
        order = tuple(name for name, _ in split)
        last = plane.reloader.last_result
        applied_at = plane.reloader.applied_at
        shown = (Severity.ERROR, Severity.WARNING)  # errors first
        diagnostics = [d for d in (last.diagnostics if last else ()) if d.severity in shown]
        problems = [d.format() for d in sorted(diagnostics, key=lambda d: shown.index(d.severity))]
        if last is not None and last.mesh is None:
            problems.insert(0, "the directory does not load: nothing of it is applied")
        return Frame(
            elapsed=elapsed,
            config_dir=str(plane.options.config_dir),
            ingress_url=self.demo.ingress_url,
            metrics_url=self.demo.metrics_url,
            version=plane.version,
            applied_ago=None if applied_at is None else time.time() - applied_at,
            last_change=self.demo.changes.last,
            configured=split,
            streams=[
                StreamView(
                    c.stream,
                    self.demo.labels[c.stream],
                    self.demo.tally.rate(c.stream),
                    self.demo.tally.since_reset(c.stream),
                    order,
                )
                for c in self.demo.clients
            ],
            services=self.tls_rows(mesh, where),
            problems=problems,
        )

    def show(self, plane: ControlPlane, where: list[Placement]) -> int:
        """Draw frames until the duration is over (or Ctrl-C); then the summary."""
        started = time.monotonic()
        end = None if self.demo.options.duration is None else started + self.demo.options.duration
        version = plane.version
        in_force = objects_in_force(plane)
        next_line = started + 1.0
        live = None
        if not self.demo.options.plain:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.demo.options.out)
            live = Live(console=console, auto_refresh=False, redirect_stderr=True)
            live.start()
        frame = self.frame(plane, where, 0.0)
        try:
            while end is None or time.monotonic() < end:
                time.sleep(TICK)
                dead = self.demo.supervisor.dead()
                if dead:
                    self.demo.say(f"{dead[0].name} exited unexpectedly:\n{dead[0].log_tail()}")
                    return 1
                if plane.version != version:
                    version = plane.version
                    # The split counts start over only when what is in force
                    # changed: a rejected edit (its last good version stays)
                    # changes the files' digest, not the traffic.
                    now_in_force = objects_in_force(plane)
                    if now_in_force != in_force:
                        in_force = now_in_force
                        self.demo.tally.reset()
                    if live is None:
                        self.demo.say(f"config {version} applied: {self.demo.changes.last}")
                frame = self.frame(plane, where, time.monotonic() - started)
                if live is not None:
                    size = (live.console.size.width, live.console.size.height)
                    live.update(rich_view(frame, size), refresh=True)
                elif time.monotonic() >= next_line:
                    next_line += 1.0
                    self.demo.say(plain_line(frame))
        finally:
            if live is not None:
                live.stop()
            for line in summary(frame):
                self.demo.say(line)
        return 0
