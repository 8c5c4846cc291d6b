"""A mesh of real processes on loopback: sailplane, Envoy sidecars, apps.

Each workload gets its own addresses so nothing needs privileges or collides:
``127.W.N.K`` where W is the role (10 workload/inbound, 11 app, 12 outbound,
13 admin), N the test's network and K the workload.
"""

from __future__ import annotations

import itertools
import json
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import (
    APP,
    ENVOY,
    PYTHON,
    Process,
    ProcessGroup,
    free_port,
    http_get,
    wait_for,
)

_networks = itertools.count(1 + (os.getpid() % 200))


def next_network() -> int:
    return next(_networks) % 250 + 1


@dataclass
class WorkloadSpec:
    name: str
    labels: dict[str, str]
    index: int
    network: int
    namespace: str = "default"
    service_account: str = "default"
    port: int = 5000

    @property
    def address(self) -> str:
        return f"127.10.{self.network}.{self.index}"

    @property
    def app_address(self) -> str:
        return f"127.11.{self.network}.{self.index}"

    @property
    def outbound(self) -> str:
        return f"127.12.{self.network}.{self.index}:15001"

    @property
    def admin(self) -> str:
        return f"127.13.{self.network}.{self.index}:15000"

    @property
    def id(self) -> str:
        return f"{self.name}.{self.namespace}"

    def entry(self) -> dict[str, Any]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "address": self.address,
                "labels": self.labels,
                "serviceAccount": self.service_account,
            },
        }


def service(
    name: str, port: int = 5000, namespace: str = "default", selector: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector or {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


@dataclass
class Mesh:
    """Drives one test's mesh. Every process goes into ``group``."""

    group: ProcessGroup
    config_dir: Path
    network: int = field(default_factory=next_network)
    workloads: dict[str, WorkloadSpec] = field(default_factory=dict)
    plane: Process | None = None
    xds_port: int = 0
    monitor_port: int = 0
    envoys: dict[str, Process] = field(default_factory=dict)
    _count: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    def workload(self, name: str, labels: dict[str, str], **kwargs: Any) -> WorkloadSpec:
        spec = WorkloadSpec(name, labels, next(self._count), self.network, **kwargs)
        self.workloads[name] = spec
        return spec

    def write(self, file: str, text_or_objects: str | list[dict[str, Any]]) -> Path:
        path = self.config_dir / file
        path.parent.mkdir(parents=True, exist_ok=True)
        text = text_or_objects if isinstance(text_or_objects, str) else dump(text_or_objects)
        path.write_text(textwrap.dedent(text))
        return path

    def write_registry(self, services: list[dict[str, Any]]) -> None:
        self.write("registry.yaml", services + [w.entry() for w in self.workloads.values()])

    # -- processes ---------------------------------------------------------

    def start_control_plane(self, *extra: str) -> Process:
        self.xds_port = free_port()
        self.monitor_port = free_port()
        self.plane = self.group.start(
            "sailplane",
            [
                PYTHON,
                "-m",
                "sailplane",
                "--log-level",
                "debug",
                "serve",
                "--config-dir",
                str(self.config_dir),
                "--xds-address",
                f"127.0.0.1:{self.xds_port}",
                "--monitor-address",
                f"127.0.0.1:{self.monitor_port}",
                *extra,
            ],
        )
        wait_for(lambda: http_get(self.monitor("/ready"))[0] == 200, what="sailplane /ready")
        return self.plane

    def monitor(self, path: str) -> str:
        return f"http://127.0.0.1:{self.monitor_port}{path}"

    def syncz(self) -> list[dict[str, Any]]:
        status, body = http_get(self.monitor("/debug/syncz"))
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def bootstrap(self, spec: WorkloadSpec, *extra: str) -> Path:
        out = self.config_dir.parent / f"bootstrap-{spec.name}.yaml"
        import subprocess

        subprocess.run(
            [
                PYTHON,
                "-m",
                "sailplane",
                "bootstrap",
                spec.name,
                "--namespace",
                spec.namespace,
                "--config-dir",
                str(self.config_dir),
                "--xds-address",
                f"127.0.0.1:{self.xds_port}",
                "--admin-address",
                spec.admin,
                "--outbound-address",
                spec.outbound,
                "--app-address",
                spec.app_address,
                "-o",
                str(out),
                *extra,
            ],
            check=True,
            capture_output=True,
        )
        return out

    def start_envoy(self, spec: WorkloadSpec, *extra: str) -> Process:
        bootstrap = self.bootstrap(spec, *extra)
        envoy = self.group.start(
            f"envoy-{spec.name}",
            [
                ENVOY,
                "-c",
                str(bootstrap),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warning",
                "--drain-time-s",
                "1",
            ],
        )
        self.envoys[spec.name] = envoy
        return envoy

    def start_app(
        self,
        spec: WorkloadSpec,
        role: str = "backend",
        version: str = "",
        backend: str = "http://weather-backend:5000",
    ) -> Process:
        app = self.group.start(
            f"app-{spec.name}",
            [
                PYTHON,
                APP,
                role,
                "--listen",
                f"{spec.app_address}:{spec.port}",
                "--version",
                version or spec.labels.get("version", "v1"),
                "--instance",
                spec.name,
                "--backend",
                backend,
            ],
            env={"HTTP_PROXY": f"http://{spec.outbound}", "NO_PROXY": ""},
        )
        wait_for(
            lambda: http_get(f"http://{spec.app_address}:{spec.port}/api/weather")[0] > 0,
            what=f"app {spec.name}",
        )
        return app

    def admin(self, spec: WorkloadSpec, path: str) -> str:
        return http_get(f"http://{spec.admin}{path}")[1].decode()

    def wait_synced(self, *proxies: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        def synced() -> list[dict[str, Any]] | None:
            streams = {s["proxy"]: s for s in self.syncz()}
            for proxy in proxies:
                stream = streams.get(proxy)
                if stream is None:
                    return None
                for kind in ("clusters", "listeners", "endpoints", "routes"):
                    if stream["types"].get(kind, {}).get("state") != "SYNCED":
                        return None
            return list(streams.values())

        return wait_for(synced, timeout, what=f"{proxies} SYNCED")  # type: ignore[no-any-return]

    def wait_listening(self, spec: WorkloadSpec, timeout: float = 20.0) -> None:
        """The sidecar's listeners are live (after xDS arrives, Envoy warms them)."""
        wait_for(
            lambda: (
                "listener_manager.total_listeners_active: 0"
                not in self.admin(spec, "/stats?filter=listener_manager.total_listeners_active$")
                and "total_listeners_warming: 0"
                in self.admin(spec, "/stats?filter=listener_manager.total_listeners_warming$")
            ),
            timeout,
            what=f"{spec.name} listeners active",
        )
