"""What a user checks on the running weather mesh, measured through Docker."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.realcompose.project import Project
from tests.realcompose.report import result, step
from tests.realcompose.traffic import Load, frontend_backends, get, versions, within_sigmas

PROXIES = {
    "ingress-gateway.default",
    "weather-frontend.default",
    "weather-backend-single.default",
    "weather-backend-multiple.default",
    "weather-stations-v1.default",
    "weather-stations-v2.default",
}
SIDECARS = (
    "weather-frontend-sidecar",
    "weather-backend-single-sidecar",
    "weather-backend-multiple-sidecar",
    "weather-stations-v1-sidecar",
    "weather-stations-v2-sidecar",
)
API = "/api/weather"


def all_synced(project: Project) -> bool:
    streams = project.syncz()
    synced = {
        s["proxy"]
        for s in streams
        if s["types"] and all(t["state"] == "SYNCED" for t in s["types"].values())
    }
    return synced >= PROXIES


def route_versions(project: Project) -> dict[str, str]:
    """Each proxy's acknowledged route configuration version."""
    return {s["proxy"]: s["types"].get("routes", {}).get("acked") or "" for s in project.syncz()}


def up(project: Project) -> None:
    project.compose("down", "--volumes", "--remove-orphans", timeout=120)
    with step("docker compose build"):
        project.compose("build", timeout=900)
    with step("docker compose up -d"):
        start = time.monotonic()
        project.compose("up", "-d", timeout=300)
        ready = project.wait(
            "every proxy connected and synced",
            lambda: all_synced(project) and get(project.ingress_port, API).status == 200,
        )
        result(
            f"up -d -> all {len(PROXIES)} proxies synced and the ingress answering: "
            f"{time.monotonic() - start:.1f} s ({ready:.1f} s after up returned)"
        )


def legacy_client_started_after_the_sidecars(project: Project) -> None:
    project.wait("the legacy client's first call", lambda: _calls(project), 30)
    first = _calls(project)[0]
    assert "HTTP 200" in first, f"the legacy client's first call, in PERMISSIVE: {first!r}"
    result(f"legacy client's first call (PERMISSIVE): {first!r}")


def _calls(project: Project) -> list[str]:
    return [line for line in project.logs("legacy-client") if " -> " in line]


def ingress_split(project: Project, n: int = 1000, single: float = 0.9) -> None:
    counts = versions(project.ingress_port, API, n)
    result(f"ingress split over {n} requests: {dict(counts)} (expected {single:.0%} single)")
    assert counts["single"] + counts["multiple"] == n, counts
    assert within_sigmas(counts["single"], n, single), counts


def frontend_traffic(project: Project, n: int = 200) -> None:
    counts = frontend_backends(project.frontend_port, n)
    result(f"frontend -> backend over {n} calls: {dict(counts)} (round robin, no subset rule)")
    assert counts["single"] + counts["multiple"] == n, counts
    assert within_sigmas(counts["single"], n, 0.5), counts


# Run by the frontend's app, in its pod: N connections to weather-stations:7000,
# one station line each, and the frontend sidecar's counters for the stations'
# clusters before and after (its admin is on the pod's loopback, never captured).
TCP_CLIENT = """
import json, socket, sys, time, urllib.request
def counters():
    url = "http://127.0.0.1:15000/stats?filter=weather-stations"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = {"connections": 0, "handshakes": 0}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if not name.startswith("cluster.outbound|7000|"):
            continue
        if name.endswith(".upstream_cx_total"):
            found["connections"] += int(value)
        elif name.endswith(".ssl.handshake"):
            found["handshakes"] += int(value)
    return found
before, versions = counters(), {}
for _ in range(int(sys.argv[1])):
    try:
        with socket.create_connection(("weather-stations", 7000), timeout=5) as sock:
            sock.sendall(b"zurich\\n")
            line = sock.makefile("rb").readline()
        answer = json.loads(line)["version"]
    except (OSError, ValueError) as exc:
        answer = f"error {type(exc).__name__}"
    versions[answer] = versions.get(answer, 0) + 1
time.sleep(0.5)
after = counters()
print(json.dumps({"versions": versions, **{k: after[k] - before[k] for k in after}}))
"""


def tcp_service_through_capture(project: Project, n: int = 200) -> None:
    """A TCP client that knows nothing of the mesh, split 70/30 by connection
    by the VirtualService's tcp route, every connection mTLS between sidecars."""
    start = time.monotonic()
    out = project.compose(
        "exec", "-T", "weather-frontend-app", "python", "-c", TCP_CLIENT, str(n), timeout=60
    )
    took = time.monotonic() - start
    seen = json.loads(out.strip().splitlines()[-1])
    counts = seen["versions"]
    result(
        f"weather-frontend's app -> weather-stations:7000 (TCP, no proxy settings): {n} "
        f"connections in {took:.1f} s: {counts} (expected 70% v1); the frontend sidecar's "
        f"upstream connections to it {seen['connections']}, TLS handshakes {seen['handshakes']}"
    )
    assert counts.get("v1", 0) + counts.get("v2", 0) == n, counts
    assert within_sigmas(counts["v1"], n, 0.7), counts
    assert seen["connections"] == seen["handshakes"] == n, seen


def edit(path: Path, *changes: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in changes:
        assert old in text, f"{old!r} not in {path}"
        text = text.replace(old, new)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.rename(path)  # as an editor saves: the watcher sees one complete file


def live_weight_edit(project: Project) -> None:
    before = route_versions(project)
    traffic = project.mesh / "traffic.yaml"
    edit(traffic, ("weight: 90", "weight: 50"), ("weight: 10", "weight: 50"))
    # The VirtualService is bound to the gateway only: the sidecars' routes
    # do not change, the ingress gateway's do.
    gateway = "ingress-gateway.default"
    took = project.wait(
        "the 50/50 edit acknowledged by the ingress gateway",
        lambda: (
            route_versions(project).get(gateway) not in ("", before.get(gateway))
            and all_synced(project)
        ),
        timeout=30,
    )
    result(
        f"50/50 edit: the ingress gateway acknowledged its new routes {took:.2f} s after the save"
    )
    n = 400
    counts = versions(project.ingress_port, API, n)
    result(f"ingress split after the edit over {n}: {dict(counts)}")
    assert within_sigmas(counts["single"], n, 0.5), counts


def strict_refuses_the_legacy_client(project: Project) -> None:
    seen = len(_calls(project))
    with Load(project.ingress_port, API) as load:
        edit(project.mesh / "security.yaml", ("mode: PERMISSIVE", "mode: STRICT"))
        took = project.wait(
            "the legacy client refused",
            lambda: any("refused" in line for line in _calls(project)[seen:]),
            timeout=30,
        )
        time.sleep(3)  # a few more calls: all of them refused
        # The frontend's app has no proxy settings: its calls reach the
        # backends through its sidecar only because capture put them there,
        # and so they go on, over mTLS, where the legacy client's cannot.
        frontend = frontend_backends(project.frontend_port, 100)
    after = _calls(project)[seen:]
    first = next(i for i, line in enumerate(after) if "refused" in line)
    later = after[first:]
    result(
        f"STRICT: the legacy client refused {took:.1f} s after the save; "
        f"then {sum('refused' in line for line in later)} of {len(later)} calls refused "
        f"({later[-1]!r}); the ingress meanwhile: {len(load.answers)} requests, "
        f"{len(load.failures())} failed; the frontend's captured calls: {dict(frontend)}"
    )
    assert frontend["single"] + frontend["multiple"] == 100, frontend
    # Both backends' sidecars get the policy within milliseconds; a call in
    # between may still reach the one not yet STRICT, never a later one.
    assert len(later) >= 2 and all("refused" in line for line in later[1:]), later
    assert load.answers and not load.failures(), load.failures()[:5]
    edit(project.mesh / "security.yaml", ("mode: STRICT", "mode: PERMISSIVE"))


def app_crash_recovers(project: Project) -> None:
    app, sidecar = "weather-backend-single-app", "weather-backend-single-sidecar"
    sidecar_started = project.inspect(sidecar)["State"]["StartedAt"]
    restarts = project.inspect(app)["RestartCount"]
    pid = project.inspect(app)["State"]["Pid"]
    with Load(project.ingress_port, API) as load:
        time.sleep(1)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # from outside, as a crash or the OOM killer would
        restarted = project.wait(
            "the app restarted by its policy",
            lambda: (
                project.inspect(app)["RestartCount"] > restarts
                and project.inspect(app)["State"]["Running"]
            ),
            timeout=30,
        )
        project.wait("traffic through the restarted app", lambda: _recent_ok(load, 20), 30)
    failed = [a for a in load.answers if a.at >= killed and a.status != 200]
    recovered = (failed[-1].at - killed) if failed else 0.0
    during = [a for a in load.answers if a.at >= killed]
    result(
        f"app crash (SIGKILL to weather-backend-single's app): running again {restarted:.1f} s "
        f"later by its restart policy; {len(during)} requests since the kill, "
        f"{len(failed)} failed requests, traffic recovered {recovered:.2f} s after the kill"
    )
    assert recovered < 5.0, recovered
    assert project.inspect(sidecar)["State"]["StartedAt"] == sidecar_started, "sidecar touched"
    counts = versions(project.ingress_port, API, 200)
    assert counts["single"] + counts["multiple"] == 200, counts
    assert counts["single"] > 0, counts


def _recent_ok(load: Load, n: int) -> bool:
    recent = load.answers[-n:]
    return len(recent) == n and all(a.status == 200 for a in recent)


def sailplane_restart_fails_nothing(project: Project) -> None:
    with Load(project.ingress_port, API) as load:
        time.sleep(1)
        start = time.monotonic()
        project.compose("restart", "sailplane", timeout=60)
        restarted = time.monotonic() - start
        reconnected = project.wait("proxies back on sailplane", lambda: all_synced(project), 30)
        time.sleep(1)
    result(
        f"sailplane restart: `docker compose restart sailplane` {restarted:.1f} s, "
        f"all {len(PROXIES)} "
        f"proxies synced again {reconnected:.1f} s later; {len(load.answers)} requests "
        f"meanwhile, {len(load.failures())} failed"
    )
    assert restarted < 5.0, restarted
    assert load.answers and not load.failures(), load.failures()[:5]


def down_is_quick(project: Project) -> None:
    services = project.compose("ps", "--services").split()
    ids = {s: project.container(s) for s in services}
    start = time.monotonic()
    project.compose("stop", timeout=120)
    stopped = time.monotonic() - start
    codes = {
        s: project.engine.docker("inspect", "-f", "{{.State.ExitCode}}", i).strip()
        for s, i in ids.items()
    }
    start = time.monotonic()
    project.compose("down", "--volumes", timeout=120)
    down = time.monotonic() - start
    killed = {s: c for s, c in codes.items() if c not in ("0", "143")}
    result(
        f"docker compose stop: {stopped:.1f} s ({len(codes)} containers, exit codes "
        f"{sorted(set(codes.values()))}); docker compose down --volumes: {down:.1f} s"
    )
    assert not killed, f"not stopped by SIGTERM: {killed}"
    assert stopped + down < 5.0, (stopped, down)


CHECKS: tuple[Callable[[Project], None], ...] = (
    legacy_client_started_after_the_sidecars,
    ingress_split,
    frontend_traffic,
    tcp_service_through_capture,
    live_weight_edit,
    strict_refuses_the_legacy_client,
    app_crash_recovers,
    sailplane_restart_fails_nothing,
    down_is_quick,
)


def name(check: Callable[[Project], None]) -> str:
    return re.sub("_", " ", check.__name__)
