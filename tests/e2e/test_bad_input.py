"""Bad input through a real Envoy carrying traffic (issue #15): a typo never
changes routing, and a hostile file never stalls the control plane.

Requests go through the frontend's sidecar without pause while files are
broken and fixed; none may fail. While hostile files load, the monitor's
/ready and a fresh ADS stream's first push are timed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sailplane.xds.client import AdsClient
from sailplane.xds.types import CLUSTER
from tests.e2e.test_live_config import RULE, WEATHER, routes_to, split, start
from tests.support.mesh import Mesh
from tests.support.procs import http_get, wait_for
from tests.support.traffic import Load, Reply

pytestmark = pytest.mark.e2e


def rule(swapped: bool) -> str:
    """The DestinationRule; ``swapped`` points subset v1 at the v2 pods and
    the other way round, which shows in every reply."""
    if not swapped:
        return RULE
    return (
        RULE.replace("version: v1", "version: tmp")
        .replace("version: v2", "version: v1")
        .replace("version: tmp", "version: v2")
    )


def failures(results: list[Reply | Exception]) -> list[object]:
    return [r for r in results if isinstance(r, Exception) or r.status != 200]


def diagnostics(mesh: Mesh, file: str) -> list[str]:
    return [
        f"{d['file']}:{d['line']}:{d['column']}: {d['message']}"
        for d in mesh.configz()["diagnostics"]
        if d["file"] == file and d["severity"] == "error"
    ]


# (what breaks, the file, its broken text for the next state, where the error is)
Break = tuple[str, str, Callable[[tuple[int, int], bool], str], str]
BREAKS: list[Break] = [
    (
        "apiVersion typo",
        "rule.yaml",
        lambda weights, swapped: rule(swapped).replace("istio.io/v1", "istio.io/v1alpha4"),
        r"rule\.yaml:1:13: unknown version 'v1alpha4' .*did you mean",
    ),
    (
        "kind typo",
        "vs.yaml",
        lambda weights, swapped: split(*weights).replace("VirtualService", "VirtualServce"),
        r"vs\.yaml:2:7: unknown kind 'VirtualServce' .*did you mean 'VirtualService'",
    ),
    (
        "metadata.name deleted",
        "rule.yaml",
        lambda weights, swapped: rule(swapped).replace("  name: weather-backend\n", "", 1),
        r"rule\.yaml:3:\d+: .*(a name is required|required field is missing)",
    ),
    (
        "YAML syntax error",
        "vs.yaml",
        lambda weights, swapped: split(*weights).replace("  http:", "   http:"),
        r"vs\.yaml:\d+:\d+: YAML syntax error: ",
    ),
    (
        "tab in indentation",
        "rule.yaml",
        lambda weights, swapped: rule(swapped).replace("  host:", "\thost:"),
        r"rule\.yaml:6:1: YAML syntax error: .*tab",
    ),
]


def test_typos_over_live_files_never_fail_a_request(mesh: Mesh) -> None:
    frontend, client = start(mesh, split(100, 0))
    weights: tuple[int, int] = (100, 0)
    swapped = False

    def expected() -> set[str]:
        return {"v1" if (weights == (100, 0)) != swapped else "v2"}

    with client:
        routes_to(client, expected())
        load = Load(lambda c: c.get(WEATHER), frontend.outbound).start()
        try:
            for what, file, broken, error in BREAKS:
                # The broken text carries a change too: it must not apply.
                if file == "vs.yaml":
                    weights = (weights[1], weights[0])
                else:
                    swapped = not swapped
                text = broken(weights, swapped)
                mesh.write(file, text)
                wait_for(
                    lambda f=file, e=error: any(re.search(e, d) for d in diagnostics(mesh, f)),
                    what=f"the diagnostic of the {what}",
                )
                configz = mesh.configz()
                assert configz["in_force"], what
                kinds = {o["kind"] for o in configz["in_force"]}
                assert {"VirtualService", "DestinationRule"} <= kinds, (what, configz)
                seen = load.count()
                wait_for(lambda s=seen: load.count() > s + 20, what="requests")
                recent = load.since(seen)
                assert {r.version for r in recent if isinstance(r, Reply)} != expected(), what
                # The fix applies, with its change.
                mesh.write(file, split(*weights) if file == "vs.yaml" else rule(swapped))
                routes_to(client, expected())
                wait_for(lambda f=file: not diagnostics(mesh, f), what=f"{what} fixed")
        finally:
            results = load.stop()
        assert len(results) > 100
        assert failures(results) == []


@dataclass
class Probe:
    """Times /ready and a fresh ADS stream's first push, over and over, on
    threads of their own, until stopped."""

    mesh: Mesh
    node: str
    ready: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    push: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _ready(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status, _ = http_get(self.mesh.monitor("/ready"), timeout=10)
            self.ready.append((started, time.monotonic() - started))
            if status != 200:
                self.errors.append(f"/ready {status}")
            time.sleep(0.02)

    def _push(self) -> None:
        async def one() -> None:
            async with AdsClient(f"127.0.0.1:{self.mesh.xds_port}", self.node) as ads:
                started = time.monotonic()
                ads.request(CLUSTER)
                await ads.recv(timeout=10)
                self.push.append((started, time.monotonic() - started))

        async def loop() -> None:
            while not self._stop.is_set():
                try:
                    await one()
                except Exception as exc:
                    self.errors.append(f"ADS: {exc!r}")
                await asyncio.sleep(0.02)

        asyncio.run(loop())

    @contextmanager
    def running(self) -> Iterator[Probe]:
        threads = [threading.Thread(target=t, daemon=True) for t in (self._ready, self._push)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(15)

    def worst(self, since: float) -> tuple[float, float]:
        """The slowest answers of those that were pending at or after ``since``."""
        return (
            max((s for t, s in self.ready if t + s >= since), default=0.0),
            max((s for t, s in self.push if t + s >= since), default=0.0),
        )


def peak_rss_mb(mesh: Mesh) -> float:
    assert mesh.plane is not None
    status = Path(f"/proc/{mesh.plane.popen.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
LAUGHS = 'lol1: &lol1 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"lol{i}: &lol{i} [{','.join([f'*lol{i - 1}'] * 10)}]\n" for i in range(2, 10)
)
BIG = RULE.replace("weather-backend", "big") + ("# " + "x" * 98 + "\n") * (50 * 10_000)
HOSTILE = {
    "alias bomb": (ALIAS_BOMB, "aliases expand to more than"),
    "billion laughs": (LAUGHS, "aliases expand to more than"),
    "50 MB file": (BIG, "over the limit of 8,388,608 (--max-file-size)"),
    "unhashable key": (RULE + "? [a]\n: b\n", "a mapping key must be a string, not a list"),
    "duplicate keys": (
        RULE.replace("  host: weather-backend\n", "  host: weather-backend\n  host: x\n"),
        "duplicate key 'host', already set at 6:3",
    ),
}


def test_hostile_files_give_one_diagnostic_and_never_stall_the_plane(
    mesh: Mesh, capsys: pytest.CaptureFixture[str]
) -> None:
    frontend, client = start(mesh, split(100, 0))
    report: list[str] = []
    with client:
        routes_to(client, {"v1"})
        load = Load(lambda c: c.get(WEATHER), frontend.outbound).start()
        probe = Probe(mesh, frontend.id)
        try:
            with probe.running():
                time.sleep(0.5)
                baseline = probe.worst(0)
                for what, (text, message) in HOSTILE.items():
                    since = time.monotonic()
                    # Written as is: Mesh.write's dedent of 50 MB would stall the probes.
                    (mesh.config_dir / "hostile.yaml").write_text(text)
                    wait_for(
                        lambda m=message: any(m in d for d in diagnostics(mesh, "hostile.yaml")),
                        what=f"the diagnostic of the {what}",
                    )
                    time.sleep(0.3)  # the load is over: what it did to latency shows
                    found = diagnostics(mesh, "hostile.yaml")
                    assert len(found) == 1, (what, found)
                    assert len(found[0]) < 300, found
                    ready, push = probe.worst(since)
                    report.append(
                        f"{what}: {found[0]} | worst /ready {ready * 1000:.0f} ms, "
                        f"worst first push {push * 1000:.0f} ms, "
                        f"in {time.monotonic() - since:.1f} s"
                    )
                    assert ready < 2.0 and push < 2.0, report[-1]
                    (mesh.config_dir / "hostile.yaml").unlink()
                    wait_for(lambda: mesh.configz()["last_load_applied"], what="back to good")
                # The same bombs sent to the monitor's dry run.
                since = time.monotonic()
                body = json.dumps({"files": {"a.yaml": ALIAS_BOMB, "b.yaml": LAUGHS}}).encode()
                request = urllib.request.Request(
                    mesh.monitor("/debug/diff"), data=body, method="POST"
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                assert answer["verdict"] == "rejected"
                ready, push = probe.worst(since)
                report.append(
                    f"POST /debug/diff with both bombs: worst /ready {ready * 1000:.0f} ms, "
                    f"worst first push {push * 1000:.0f} ms"
                )
                assert ready < 2.0 and push < 2.0, report[-1]
        finally:
            results = load.stop()
        assert probe.errors == []
        assert failures(results) == []
        report.append(
            f"baseline: worst /ready {baseline[0] * 1000:.0f} ms, first push "
            f"{baseline[1] * 1000:.0f} ms; {len(results)} requests, 0 failed; "
            f"peak RSS of the control plane {peak_rss_mb(mesh):.0f} MB"
        )
        assert peak_rss_mb(mesh) < 1024
    with capsys.disabled():
        print("\n" + "\n".join(report))
