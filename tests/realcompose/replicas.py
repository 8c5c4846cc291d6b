"""docker-compose.replicas.yml for real, kept short: up with the override,
both replicas registered in etcd with the same configuration, traffic
through the ingress, sailplane-a killed with SIGKILL under that traffic ->
every proxy on sailplane-b, and how many requests failed; then down."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from tests.realcompose.checks import API, PROXIES
from tests.realcompose.project import Project
from tests.realcompose.report import PREFIX, result, step
from tests.realcompose.traffic import Load, get

FILES = ("docker-compose.yml", "docker-compose.replicas.yml")
STORE = "etcd://etcd:2379"
REPLICAS = {"sailplane": "sailplane-a", "sailplane-b": "sailplane-b"}  # service -> replica


def mesh_status(project: Project, service: str) -> dict[str, Any]:
    """`sailplane status --config-store --json`, run in a replica's container."""
    out = project.compose(
        "exec", "-T", service, "sailplane", "status", "--config-store", STORE, "--json", timeout=30
    )
    data: dict[str, Any] = json.loads(out)
    return data


def serving(status: dict[str, Any]) -> dict[str, set[str]]:
    """Proxy -> the replicas holding a record of it (a killed replica's
    records stay until its lease runs out)."""
    found: dict[str, set[str]] = {}
    for proxy in status["proxies"]:
        found.setdefault(proxy["node_id"], set()).add(proxy["replica"])
    return found


def registered(project: Project) -> bool:
    status = mesh_status(project, "sailplane-b")
    alive = {r["name"]: r["version"] for r in status["replicas"] if r["alive"]}
    return (
        set(alive) == set(REPLICAS.values())
        and len(set(alive.values())) == 1
        and set(serving(status)) >= PROXIES
        and get(project.ingress_port, API).status == 200
    )


def run(project: Project) -> None:
    project = replace(project, files=FILES)
    project.compose("down", "--volumes", "--remove-orphans", timeout=120)
    try:
        with step("replicas: docker compose -f ... -f docker-compose.replicas.yml up -d"):
            project.compose("build", timeout=900)
            start = time.monotonic()
            project.compose("up", "-d", timeout=300)
            project.wait(
                "both replicas registered, every proxy served", lambda: registered(project)
            )
            status = mesh_status(project, "sailplane-b")
            placed = Counter(r for p in serving(status).values() for r in p)
            version = {r["version"] for r in status["replicas"]}
            result(
                f"replicas: up -> both replicas alive in etcd with one version {version}, "
                f"{len(PROXIES)} proxies served ({dict(placed)}): "
                f"{time.monotonic() - start:.1f} s"
            )
        with step("replicas: SIGKILL sailplane-a under traffic"):
            killed_container = project.container("sailplane")
            with Load(project.ingress_port, API) as load:
                time.sleep(1)
                killed = time.monotonic()
                project.engine.docker("kill", "-s", "KILL", killed_container)

                def all_on_b() -> bool:
                    found = serving(mesh_status(project, "sailplane-b"))
                    return all("sailplane-b" in found.get(p, set()) for p in PROXIES)

                moved = project.wait("every proxy on sailplane-b", all_on_b, timeout=60)
                time.sleep(1)
            during = [a for a in load.answers if a.at >= killed]
            failed = [a for a in during if a.status != 200]
            state = project.inspect("sailplane")["State"]
            result(
                f"replicas: sailplane-a killed (SIGKILL), {placed.get('sailplane-a', 0)} proxies "
                f"were on it: every proxy on sailplane-b within {moved:.1f} s (status polled "
                f"in a container, ~1 s a poll); {len(during)} requests through the ingress "
                f"since the kill, {len(failed)} failed; sailplane-a afterwards: "
                f"{state['Status']} (restarts {project.inspect('sailplane')['RestartCount']})"
            )
            assert during and not failed, [(a.status, a.at - killed) for a in failed[:5]]
    except BaseException:
        print(f"{PREFIX} replicas: container states and recent logs follow", file=sys.stderr)
        print(project.compose("ps", "--all", check=False), file=sys.stderr)
        logs = project.compose("logs", "--no-color", "--tail", "30", check=False)
        print(logs[-20000:], file=sys.stderr)
        raise
    finally:
        with step("replicas: docker compose down --volumes"):
            project.compose(
                "down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=120, check=False
            )
