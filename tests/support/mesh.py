"""A mesh of real processes on loopback: sailplane, Envoy sidecars, apps.

Each workload gets its own addresses so nothing needs privileges or collides:
``127.W.N.K`` where W is the role (10 workload/inbound, 11 app, 12 outbound,
13 admin), N the test's network and K the workload.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import textwrap
import urllib.parse
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
    free_ports,
    http_get,
    wait_for,
)

_networks = itertools.count(1 + (os.getpid() % 200))


def next_network() -> int:
    return next(_networks) % 250 + 1


# For a client whose test reads its outbound clusters' counters: a sidecar
# keeps them only when asked (sailplane.translate.stats), as in Istio.
OUTBOUND_STATS = {"sidecar.istio.io/statsInclusionPrefixes": "cluster.outbound"}


@dataclass
class WorkloadSpec:
    name: str
    labels: dict[str, str]
    index: int
    network: int
    namespace: str = "default"
    service_account: str = "default"
    port: int = 5000
    # WorkloadEntry ``ports``: service port name -> this workload's port.
    ports: dict[str, int] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

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
        spec: dict[str, Any] = {
            "address": self.address,
            "labels": self.labels,
            "serviceAccount": self.service_account,
        }
        if self.ports:
            spec["ports"] = self.ports
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.annotations:
            metadata["annotations"] = self.annotations
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": metadata,
            "spec": spec,
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
    secure_xds_port: int = 0

    @property
    def ca_dir(self) -> Path:
        return self.config_dir.parent / "ca"

    envoys: dict[str, Process] = field(default_factory=dict)
    _count: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    def workload(self, name: str, labels: dict[str, str], **kwargs: Any) -> WorkloadSpec:
        spec = WorkloadSpec(name, labels, next(self._count), self.network, **kwargs)
        self.workloads[name] = spec
        return spec

    def external(self, name: str, port: int = 5000) -> WorkloadSpec:
        """Addresses on this test's network for something outside the mesh (no
        WorkloadEntry is written for it): an external API, say."""
        return WorkloadSpec(name, {}, next(self._count), self.network, port=port)

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
        self.xds_port, self.monitor_port, self.secure_xds_port = free_ports(3)
        self.plane = self.group.start(
            "sailplane",
            [
                PYTHON,
                "-m",
                "sailplane",
                "--log-level",
                "debug",
                "serve",
                # --config-store URL in ``extra`` reads the configuration there instead
                *(() if "--config-store" in extra else ("--config-dir", str(self.config_dir))),
                "--xds-address",
                f"127.0.0.1:{self.xds_port}",
                "--monitor-address",
                f"127.0.0.1:{self.monitor_port}",
                "--secure-xds-address",
                f"127.0.0.1:{self.secure_xds_port}",
                *(() if "--ca-dir" in extra else ("--ca-dir", str(self.ca_dir))),
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

    def configz(self) -> dict[str, Any]:
        status, body = http_get(self.monitor("/debug/configz"))
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def bootstrap(self, spec: WorkloadSpec, *extra: str) -> Path:
        """The proxy's bootstrap: the mTLS xDS port with a certificate from
        the plane's CA, as `sailplane bootstrap` does by default; with
        ``--plaintext`` in ``extra``, the plaintext port (no secrets)."""
        out = self.config_dir.parent / f"bootstrap-{spec.name}.yaml"
        port = self.xds_port if "--plaintext" in extra else self.secure_xds_port
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
                "--ca-dir",
                str(self.ca_dir),
                "--xds-address",
                f"127.0.0.1:{port}",
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

    def start_envoy(
        self,
        spec: WorkloadSpec,
        *extra: str,
        detect_role: bool = False,
        drain_time_s: int | None = 1,
    ) -> Process:
        """``detect_role``: leave the role out of the node metadata, so the
        control plane decides it (a workload a Gateway selects is a gateway).
        ``drain_time_s=None``: Envoy's own drain settings (600 s, gradual), as
        a user's Envoy has; tests that change listeners default to 1 s."""
        bootstrap = self.bootstrap(spec, *extra)
        if detect_role:
            config = yaml.safe_load(bootstrap.read_text())
            config["node"].get("metadata", {}).pop("role", None)
            bootstrap.write_text(yaml.safe_dump(config, sort_keys=False))
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
                *(() if drain_time_s is None else ("--drain-time-s", str(drain_time_s))),
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
        *extra: str,
        sidecar: bool = True,
    ) -> Process:
        """Start the weather app for ``spec``. With a sidecar it listens on the
        app address behind the inbound listener and calls out through
        ``HTTP_PROXY``; without one it listens on the workload address itself
        and calls out directly. ``extra`` goes to app.py (``--fail-path-prefix``)."""
        address = spec.app_address if sidecar else spec.address
        env = {"HTTP_PROXY": f"http://{spec.outbound}", "NO_PROXY": ""} if sidecar else {}
        app = self.group.start(
            f"app-{spec.name}",
            [
                PYTHON,
                APP,
                role,
                "--listen",
                f"{address}:{spec.port}",
                "--version",
                version or spec.labels.get("version", "v1"),
                "--instance",
                spec.name,
                "--backend",
                backend,
                *extra,
            ],
            env=env,
        )
        wait_for(
            lambda: http_get(f"http://{address}:{spec.port}/api/weather")[0] > 0,
            what=f"app {spec.name}",
        )
        return app

    def admin(self, spec: WorkloadSpec, path: str) -> str:
        return self.admin_at(spec.admin, path)

    def admin_at(self, address: str, path: str) -> str:
        return http_get(f"http://{address}{path}")[1].decode()

    def http(self, path: str) -> str:
        """GET a monitor page of the control plane."""
        return http_get(self.monitor(path))[1].decode()

    def stat(self, spec: WorkloadSpec, name: str) -> int:
        """One Envoy counter or gauge by its full name (0 if Envoy has none yet),
        e.g. ``cluster.outbound|5000||weather-backend.default.svc.cluster.local.
        upstream_rq_pending_overflow``."""
        query = urllib.parse.quote(f"^{re.escape(name)}$")
        for line in self.admin(spec, f"/stats?usedonly&filter={query}").splitlines():
            key, _, value = line.rpartition(": ")
            if key == name:
                return int(value)
        return 0

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
