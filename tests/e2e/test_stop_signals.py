"""SIGTERM stops `sailplane serve` and the example apps cleanly, with exit 0.

``docker stop`` sends SIGTERM to a container's PID 1 and kills it 10 s
later. The kernel gives PID 1 no default action for SIGTERM: a process that
installs no handler ignores it. Each case also runs as PID 1 of a new PID
namespace (``unshare --pid --fork``, root only), which is that container case.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sailplane.xds.client import AdsClient
from sailplane.xds.types import CLUSTER
from tests.support.ci import skip_unless_ci
from tests.support.procs import (
    APP,
    PYTHON,
    Process,
    ProcessGroup,
    free_ports,
    http_get,
    wait_for,
)

STOP_WITHIN = 2.0  # seconds from SIGTERM to exit


def _pid1_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a PID namespace (unshare --pid)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        return f"unshare --pid fails here: {probe.stderr.decode(errors='replace').strip()}"
    return None


@pytest.fixture(scope="module")
def pid1_reason() -> str | None:
    return skip_unless_ci(_pid1_unavailable())


def launch(
    processes: ProcessGroup, name: str, argv: list[str], pid1: bool, reason: str | None
) -> tuple[Process, int]:
    """Start ``argv`` (as PID 1 of a new PID namespace with ``pid1``); return the
    process and the pid to signal: under unshare, its child, PID 1 inside."""
    if not pid1:
        process = processes.start(name, argv)
        return process, process.popen.pid
    if reason is not None:
        pytest.skip(reason)
    process = processes.start(name, ["unshare", "--pid", "--fork", "--mount-proc", *argv])
    children = Path(f"/proc/{process.popen.pid}/task/{process.popen.pid}/children")
    child = wait_for(lambda: children.read_text().split(), timeout=5, what="unshare's child")
    return process, int(child[0])


def sigterm_and_wait(process: Process, pid: int) -> tuple[int, float]:
    """SIGTERM ``pid``; the exit code of ``process`` and how long it took."""
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        code = process.popen.wait(STOP_WITHIN + 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.name} still running {STOP_WITHIN + 3}s after SIGTERM")
    return code, time.monotonic() - started


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_pid1_ignores_sigterm_without_a_handler(
    processes: ProcessGroup, pid1_reason: str | None
) -> None:
    """The setup the PID 1 cases rely on: `sleep` has no handler, so as PID 1
    SIGTERM leaves it running (as in a container)."""
    sleeper, pid = launch(processes, "sleep", ["sleep", "30"], True, pid1_reason)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    assert sleeper.alive()
    os.kill(pid, signal.SIGKILL)  # what the fixture's SIGTERM would come to, 5 s later
    sleeper.popen.wait(5)


# -- sailplane serve ---------------------------------------------------------


def start_serve(
    processes: ProcessGroup, tmp_path: Path, pid1: bool, reason: str | None
) -> tuple[Process, int, list[int]]:
    xds, secure, monitor = free_ports(3)
    argv = [
        PYTHON,
        "-m",
        "sailplane",
        "serve",
        "--xds-address",
        f"127.0.0.1:{xds}",
        "--secure-xds-address",
        f"127.0.0.1:{secure}",
        "--monitor-address",
        f"127.0.0.1:{monitor}",
        "--ca-dir",
        str(tmp_path / "ca"),
    ]
    process, pid = launch(processes, "sailplane", argv, pid1, reason)
    wait_for(
        lambda: http_get(f"http://127.0.0.1:{monitor}/ready", timeout=1)[0] == 200,
        what="sailplane /ready",
    )
    return process, pid, [xds, secure, monitor]


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
def test_serve_stops_on_sigterm(
    processes: ProcessGroup, tmp_path: Path, pid1: bool, pid1_reason: str | None
) -> None:
    plane, pid, ports = start_serve(processes, tmp_path, pid1, pid1_reason)
    code, took = sigterm_and_wait(plane, pid)
    assert code == 0, plane.log()
    assert took < STOP_WITHIN
    assert all(refused(port) for port in ports)
    assert "INFO sailplane: stopping on SIGTERM" in plane.log()


async def test_serve_stops_promptly_with_a_stream_open(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    """An ADS stream never ends by itself: stop's gRPC grace is all spent
    waiting for it, so it must be short."""
    plane, pid, (xds, _, _) = start_serve(processes, tmp_path, False, None)
    async with AdsClient(f"127.0.0.1:{xds}", "weather-frontend.default") as client:
        client.request(CLUSTER)
        assert (await client.recv()).resources
        code, took = sigterm_and_wait(plane, pid)
    assert code == 0, plane.log()
    assert took < 0.9, f"stop took {took:.2f}s with one stream open"


# -- the example apps ----------------------------------------------------------


def app_argv(role: str, port: int) -> list[str]:
    if role == "pause":
        return [PYTHON, APP, "pause"]
    if role == "client":
        return [PYTHON, APP, "client", "--backend", f"http://127.0.0.1:{port}", "--interval", "0.2"]
    return [PYTHON, APP, role, "--listen", f"127.0.0.1:{port}"]


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
@pytest.mark.parametrize("role", ["backend", "frontend", "stations", "client", "pause"])
def test_app_stops_on_sigterm(
    processes: ProcessGroup, role: str, pid1: bool, pid1_reason: str | None
) -> None:
    (port,) = free_ports(1)
    app, pid = launch(processes, role, app_argv(role, port), pid1, pid1_reason)
    # Its first line: the handlers are in place.
    wait_for(lambda: app.log().strip(), timeout=5, what=f"{role} started")
    code, took = sigterm_and_wait(app, pid)
    assert code == 0, app.log()
    assert took < STOP_WITHIN
    if role in ("backend", "frontend", "stations"):
        assert refused(port)


def test_pause_uses_no_cpu_while_waiting(processes: ProcessGroup) -> None:
    pause = processes.start("pause", [PYTHON, APP, "pause"])
    wait_for(lambda: "pause" in pause.log(), timeout=5, what="pause started")
    stat = Path(f"/proc/{pause.popen.pid}/stat")

    def cpu_ticks() -> int:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = cpu_ticks()
    time.sleep(0.5)
    assert cpu_ticks() == before
    assert stat.read_text().rsplit(")", 1)[1].split()[0] == "S"  # asleep in the kernel


# -- the legacy client ---------------------------------------------------------


def client_lines(
    processes: ProcessGroup, backend: str, env: dict[str, str] | None = None, count: int = 2
) -> list[str]:
    """The first ``count`` call lines of a client of ``backend``."""
    client = processes.start(
        f"client-{len(processes.processes)}",
        [PYTHON, APP, "client", "--backend", backend, "--interval", "0.2"],
        env=env,
    )
    calls: Callable[[], list[str]] = lambda: [  # noqa: E731
        line for line in client.log().splitlines() if " -> " in line
    ]
    lines = wait_for(lambda: len(calls()) >= count and calls(), timeout=5, what="client calls")
    client.stop()
    return list(lines[:count])


def test_client_reports_each_call(processes: ProcessGroup) -> None:
    backend_port, closed_port = free_ports(2)
    backend = processes.start(
        "backend", [PYTHON, APP, "backend", "--listen", f"127.0.0.1:{backend_port}"]
    )
    wait_for(lambda: "on 127.0.0.1" in backend.log(), timeout=5, what="backend")
    # Outside the mesh: a proxy in the environment is not used.
    dead_proxy = f"http://127.0.0.1:{closed_port}"
    proxies = {name: dead_proxy for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY")}
    assert (
        client_lines(processes, f"http://127.0.0.1:{backend_port}", proxies)
        == ["legacy-client -> 127.0.0.1: HTTP 200"] * 2
    )
    assert (
        client_lines(processes, f"http://localhost:{closed_port}")
        == ["legacy-client -> localhost: refused (connection refused)"] * 2
    )
