"""What the demo shows: one :class:`Frame` a tick, drawn as a live terminal
view (rich) or as one plain line (no terminal, or ``--plain``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sailplane.demo.traffic import REFUSED

if TYPE_CHECKING:
    from rich.console import RenderableType


@dataclass(frozen=True)
class StreamView:
    """One client's traffic: rate now, and answers since the last config change."""

    name: str  # short, for the plain line: ingress, mesh, legacy
    label: str  # for the live view
    rate: float
    counts: Counter[str]
    order: tuple[str, ...] = ()  # versions in the configured order come first

    @property
    def versions(self) -> dict[str, int]:
        def rank(version: str) -> tuple[int, str]:
            known = version in self.order
            return (self.order.index(version) if known else len(self.order), version)

        found = [k for k in self.counts if not _is_failure(k)]
        return {k: self.counts[k] for k in sorted(found, key=rank)}

    @property
    def failures(self) -> dict[str, int]:
        return {k: n for k, n in sorted(self.counts.items()) if _is_failure(k)}

    @property
    def answered(self) -> int:
        return sum(self.versions.values())

    def share(self, version: str) -> float:
        answered = self.answered
        return 100.0 * self.counts[version] / answered if answered else 0.0


def _is_failure(outcome: str) -> bool:
    return outcome == REFUSED or outcome.startswith("HTTP ") or outcome == "?"


@dataclass(frozen=True)
class ServiceTLS:
    """A service's mTLS state: the PeerAuthentication mode of its instances,
    what its callers do, and what its sidecars saw (connections accepted
    with mTLS, in plaintext, and refused)."""

    service: str
    mode: str
    clients: str
    mtls: int | None = None
    plaintext: int | None = None
    refused: int | None = None


@dataclass(frozen=True)
class Frame:
    elapsed: float
    config_dir: str
    ingress_url: str
    metrics_url: str
    version: str
    applied_ago: float | None
    last_change: str
    configured: Sequence[tuple[str, int]]
    streams: Sequence[StreamView]
    services: Sequence[ServiceTLS]
    problems: Sequence[str] = field(default_factory=tuple)


def _split(stream: StreamView) -> str:
    parts = [f"{v} {stream.share(v):.1f}%" for v in stream.versions]
    return " ".join(parts) if parts else "-"


def _failures(stream: StreamView) -> str:
    return ", ".join(f"{k} {n}" for k, n in stream.failures.items())


def configured_text(configured: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {weight}" for name, weight in configured) or "-"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f}s ago"


def plain_line(frame: Frame) -> str:
    """One line a second for logs and scripts."""
    streams = []
    for s in frame.streams:
        text = f"{s.name} {s.rate:.1f}/s {_split(s)}"
        failures = _failures(s)
        streams.append(f"{text} failed: {failures}" if failures else text)
    tls = ", ".join(f"{t.service} {t.mode}" for t in frame.services)
    line = (
        f"[{frame.elapsed:4.0f}s] {' | '.join(streams)} | mTLS {tls} | "
        f"config {frame.version} applied {_ago(frame.applied_ago)}"
    )
    if frame.problems:
        line += f" | {len(frame.problems)} problem(s): {frame.problems[0]}"
    return line


def summary(frame: Frame) -> list[str]:
    """The closing lines: what each client got since the last config change."""
    lines = []
    for s in frame.streams:
        split = ", ".join(f"{v} {s.share(v):.1f}%" for v in s.versions) or "no answer"
        line = f"{s.label}: {sum(s.counts.values())} requests since the last config change: {split}"
        if s.name == "ingress":
            line += f" (configured: {configured_text(frame.configured)})"
        failures = _failures(s)
        lines.append(f"{line}; failed: {failures or 0}")
    return lines


def rich_view(frame: Frame) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text.assemble(
        ("sailplane demo", "bold"),
        f"  up {frame.elapsed:.0f}s   ingress {frame.ingress_url}   metrics {frame.metrics_url}\n",
        ("watching ", "dim"),
        frame.config_dir,
        ("  (edit the YAML: the view follows; Ctrl-C stops everything)", "dim"),
    )
    traffic = Table(title="traffic (split since the last config change)", title_justify="left")
    traffic.add_column("from -> to")
    traffic.add_column("req/s", justify="right")
    traffic.add_column("answers by version")
    traffic.add_column("failed")
    for s in frame.streams:
        failures = _failures(s)
        traffic.add_row(
            s.label,
            f"{s.rate:.1f}",
            _split(s),
            Text(failures or "0", style="bold red" if failures else ""),
        )
    tls = Table(title="mTLS per service", title_justify="left")
    tls.add_column("service")
    tls.add_column("inbound (PeerAuthentication)")
    tls.add_column("callers with a sidecar")
    tls.add_column("connections: mTLS / plaintext / refused", justify="right")
    for t in frame.services:
        seen = "-" if t.mtls is None else f"{t.mtls} / {t.plaintext} / {t.refused}"
        style = {"STRICT": "bold green", "DISABLE": "yellow"}.get(t.mode, "")
        tls.add_row(t.service, Text(t.mode, style=style), t.clients, seen)
    config = Text.assemble(
        ("config ", "bold"),
        f"{frame.version} applied {_ago(frame.applied_ago)}: {frame.last_change}\n",
        ("ingress split configured: ", "dim"),
        configured_text(frame.configured),
    )
    parts: list[RenderableType] = [header, traffic, tls, config]
    if frame.problems:
        problems = Text("problems (the last good configuration stays in force):\n", style="red")
        for problem in frame.problems[:5]:
            problems.append(f"  {problem}\n")
        parts.append(problems)
    return Group(*parts)


@dataclass(frozen=True)
class WorkloadRow:
    workload: str
    address: str
    app: str
    admin: str
    pids: Sequence[int]


def where_to_look(
    *,
    config_dir: Path,
    ingress_url: str,
    metrics_url: str,
    xds_ports: tuple[int, int],
    monitor_port: int,
    rows: Sequence[WorkloadRow],
    legacy_target: str | None,
    duration: float | None,
) -> list[str]:
    """What the demo prints once the mesh is up: where everything is."""
    lines = [
        "sailplane demo: the weather mesh on loopback addresses (no containers, no privileges)",
        "",
        f"  config dir  {config_dir}  (watched: edit the YAML and the view follows)",
        f"  ingress     {ingress_url}",
        f"  metrics     {metrics_url}",
        f"  xDS         127.0.0.1:{xds_ports[0]} (plaintext), "
        f"127.0.0.1:{xds_ports[1]} (mTLS, used by the demo's proxies)",
        f"  status      sailplane status --monitor-address 127.0.0.1:{monitor_port}",
        "",
        f"  {'workload':<34} {'address':<14} {'app':<20} {'envoy admin':<20} pids",
    ]
    for row in rows:
        pids = " ".join(map(str, row.pids))
        lines.append(f"  {row.workload:<34} {row.address:<14} {row.app:<20} {row.admin:<20} {pids}")
    if legacy_target:
        lines.append(f"  {'legacy-client (no sidecar)':<34} calls {legacy_target} directly")
    lines.append("")
    split, policy = config_dir / "traffic.yaml", config_dir / "security.yaml"
    if split.exists() and policy.exists():
        lines.append(f"  try: sed -i 's/weight: 90/weight: 50/; s/weight: 10/weight: 50/' {split}")
        lines.append(f"       sed -i 's/mode: PERMISSIVE/mode: STRICT/' {policy}")
    if duration is None:
        lines.append("  Ctrl-C stops everything.")
    else:
        lines.append(f"  stopping after {duration:g}s (or Ctrl-C).")
    return [*lines, ""]
