"""What the demo shows: one :class:`Frame` a tick, drawn as a live terminal
view (rich) or as one plain line (no terminal, or ``--plain``)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# The smallest terminal the live view is made for; the config line and the
# problems must stay on screen there (tables give way first).
VIEW_SIZE = (80, 24)
MAX_PROBLEMS = 5


def rich_view(frame: Frame, size: tuple[int, int] = VIEW_SIZE) -> RenderableType:
    """The live view, at most ``size`` (columns, rows). The header, the config
    line and the problems always show, one line each (cut with an ellipsis);
    the tables get what is left: boxed with titles, then compact, then the
    mTLS table without its counters, then without it, then neither."""
    from rich.console import Console, Group

    width, height = size
    measure = Console(width=width, height=height, color_system=None, file=io.StringIO())
    shown = MAX_PROBLEMS
    header, config, problems = _essentials(frame, shown)
    fixed = _height(measure, [header, config, *problems], width)
    while shown > 1 and fixed > height:
        shown -= 1
        header, config, problems = _essentials(frame, shown)
        fixed = _height(measure, [header, config, *problems], width)
    variants: list[list[RenderableType]] = [
        [_traffic_table(frame, compact=False), _tls_table(frame, compact=False, counts=True)],
        [_traffic_table(frame, compact=True), _tls_table(frame, compact=True, counts=True)],
        [_traffic_table(frame, compact=True), _tls_table(frame, compact=True, counts=False)],
        [_traffic_table(frame, compact=True)],
        [],
    ]
    for tables in variants:
        if fixed + _height(measure, tables, width) <= height:
            break
    return Group(header, *tables, config, *problems)


def _height(console: Any, parts: Sequence[RenderableType], width: int) -> int:
    from rich.console import Group

    if not parts:
        return 0
    options = console.options.update(width=width)
    return len(console.render_lines(Group(*parts), options, pad=False))


def _line(*parts: str | tuple[str, str]) -> Any:
    from rich.text import Text

    text = Text.assemble(*parts)
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _essentials(frame: Frame, most: int) -> tuple[Any, Any, list[Any]]:
    """The header, the config line and up to ``most`` problems, a line each."""
    from rich.console import Group

    header = Group(
        _line(
            ("sailplane demo", "bold"),
            f"  up {frame.elapsed:.0f}s   ingress {frame.ingress_url}   "
            f"metrics {frame.metrics_url}",
        ),
        _line(
            ("watching ", "dim"),
            frame.config_dir,
            ("  (edit the YAML: the view follows; Ctrl-C stops everything)", "dim"),
        ),
    )
    config = Group(
        _line(
            ("config ", "bold"),
            f"{frame.version} applied {_ago(frame.applied_ago)}: {frame.last_change}",
        ),
        _line(("ingress split configured: ", "dim"), configured_text(frame.configured)),
    )
    problems: list[Any] = []
    if frame.problems:
        problems.append(_line(("problems (the last good configuration stays in force):", "red")))
        shown = frame.problems[:most]
        problems += [_line(f"  {problem}") for problem in shown]
        if len(frame.problems) > len(shown):
            problems.append(_line(f"  ... and {len(frame.problems) - len(shown)} more"))
    return header, config, problems


def _traffic_table(frame: Frame, compact: bool) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    title = None if compact else "traffic (split since the last config change)"
    traffic = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        padding=(0, 1),
        show_edge=not compact,
    )
    traffic.add_column("traffic" if compact else "from -> to", no_wrap=True)
    traffic.add_column("req/s", justify="right", no_wrap=True)
    traffic.add_column("answers by version")
    traffic.add_column("failed")
    for s in frame.streams:
        failures = _failures(s)
        traffic.add_row(
            s.name if compact else s.label,
            f"{s.rate:.1f}",
            _split(s),
            Text(failures or "0", style="bold red" if failures else ""),
        )
    return traffic


def _tls_table(frame: Frame, compact: bool, counts: bool) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    tls = Table(
        title=None if compact else "mTLS per service",
        title_justify="left",
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        padding=(0, 1),
        show_edge=not compact,
    )
    tls.add_column("service", no_wrap=True)
    tls.add_column("mTLS mode" if compact else "inbound (PeerAuthentication)")
    tls.add_column("callers" if compact else "callers with a sidecar")
    if counts:
        tls.add_column("mTLS/plain/refused", justify="right")
    for t in frame.services:
        seen = "-" if t.mtls is None else f"{t.mtls} / {t.plaintext} / {t.refused}"
        style = {"STRICT": "bold green", "DISABLE": "yellow"}.get(t.mode, "")
        cells: list[Any] = [t.service, Text(t.mode, style=style), t.clients]
        tls.add_row(*cells, *([seen] if counts else []))
    return tls


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
    pods: str | None = None,
    xds_host: str = "127.0.0.1",
) -> list[str]:
    """What the demo prints once the mesh is up: where everything is.
    ``pods``: the pods' namespaces (``spd123-abc-``), when they are pods."""
    setting = (
        "in network namespaces, captured by iptables (as root)"
        if pods
        else "on loopback addresses (no containers, no privileges)"
    )
    lines = [
        f"sailplane demo: the weather mesh {setting}",
        "",
        f"  config dir  {config_dir}  (watched: edit the YAML and the view follows)",
        f"  ingress     {ingress_url}",
        f"  metrics     {metrics_url}",
        f"  xDS         127.0.0.1:{xds_ports[0]} (plaintext), "
        f"{xds_host}:{xds_ports[1]} (mTLS, used by the demo's proxies)",
        f"  status      sailplane status --monitor-address 127.0.0.1:{monitor_port}",
        "",
        f"  {'workload':<34} {'address':<14} {'app':<20} {'envoy admin':<20} pids",
    ]
    for row in rows:
        pids = " ".join(map(str, row.pids))
        lines.append(f"  {row.workload:<34} {row.address:<14} {row.app:<20} {row.admin:<20} {pids}")
    if pods:
        lines.append(
            f"  an Envoy admin answers inside its pod: ip netns exec {pods}N curl -s "
            "127.0.0.1:15000/stats (N: the pod's number)"
        )
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
