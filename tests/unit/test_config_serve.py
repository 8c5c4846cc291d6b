"""An in-process control plane with its real watcher and real gRPC clients:
reloads, last good config, metrics, /debug/configz, /debug/proxyz, dry runs.
(Through real Envoy: tests/e2e/test_live_config.py.)"""

from __future__ import annotations

import asyncio
import json
import textwrap
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sailplane.cli import main
from sailplane.server.plane import ControlPlane, ServeOptions
from sailplane.xds.client import AdsClient
from tests.support.procs import http_get

REGISTRY = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend}
spec: {address: 127.0.0.1, labels: {app: frontend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec: {address: 127.0.0.2, labels: {app: backend, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2}
spec: {address: 127.0.0.3, labels: {app: backend, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress}
spec: {address: 127.0.0.4, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def split(v1: int, v2: int, subset2: str = "v2") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: backend}}
        spec:
          hosts: [backend]
          http:
          - route:
            - destination: {{host: backend, subset: v1}}
              weight: {v1}
            - destination: {{host: backend, subset: {subset2}}}
              weight: {v2}
        """
    )


def gateway(port: int) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {{name: ingress}}
        spec:
          selector: {{istio: ingressgateway}}
          servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
        """
    )


@dataclass
class Running:
    plane: ControlPlane
    config_dir: Path
    clients: dict[str, AdsClient] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.plane.monitor_port}{path}"

    async def get(self, path: str) -> tuple[int, bytes]:
        return await asyncio.to_thread(http_get, self.url(path))

    async def metrics(self) -> dict[str, float]:
        """``name{label="v",...}`` -> value, for every sample."""
        status, body = await self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    async def configz(self) -> dict[str, Any]:
        status, body = await self.get("/debug/configz")
        assert status == 200
        return json.loads(body)  # type: ignore[no-any-return]

    def write(self, name: str, text: str) -> None:
        (self.config_dir / name).write_text(text)

    async def cli(self, *argv: str) -> int:
        address = f"127.0.0.1:{self.plane.monitor_port}"
        return await asyncio.to_thread(main, [*argv, "--monitor-address", address])


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {check}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "registry.yaml").write_text(REGISTRY)
    (config / "vs.yaml").write_text(split(100, 0))
    (config / "gateway.yaml").write_text(gateway(80))
    plane = ControlPlane(
        ServeOptions(
            config,
            xds_address=("127.0.0.1", 0),
            monitor_address=("127.0.0.1", 0),
            debounce_quiet=0.05,
            debounce_max=0.5,
        )
    )
    await plane.start()
    run = Running(plane, config)
    stop = asyncio.Event()
    tasks = []
    for node in ("frontend.default", "ingress.default"):
        client = run.clients[node] = AdsClient(f"127.0.0.1:{plane.xds_port}", node)
        client.open()
        tasks.append(asyncio.create_task(client.follow(stop)))
    try:
        await eventually(lambda: len(plane.status.to_json()) == 2 and synced(plane))
        yield run
    finally:
        stop.set()
        for client in run.clients.values():
            await client.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await plane.stop()


def synced(plane: ControlPlane) -> bool:
    return all(t["state"] == "SYNCED" for s in plane.status.to_json() for t in s["types"].values())


def versions(plane: ControlPlane, node: str) -> dict[str, str]:
    snapshot = plane.cache.get(node)
    assert snapshot is not None
    return {t: snapshot.version(t) for t in snapshot.resources}


async def test_a_change_pushes_and_moves_the_metrics(running: Running) -> None:
    plane = running.plane
    before = await running.metrics()
    assert before['pilot_xds{version="unknown"}'] == 2
    assert before['pilot_xds_pushes_total{type="cds"}'] >= 2
    assert before['sailplane_config_reloads_total{result="applied"}'] == 1
    assert before['sailplane_config_events_total{event="add",kind="VirtualService"}'] == 1
    applied, rds = plane.reloader.applied, plane.metrics.pushes.value("rds")
    running.write("vs.yaml", split(0, 100))
    await eventually(lambda: plane.reloader.applied == applied + 1)
    await eventually(lambda: plane.metrics.pushes.value("rds") > rds and synced(plane))
    after = await running.metrics()
    assert after['sailplane_config_events_total{event="update",kind="VirtualService"}'] == 1
    assert (
        after['pilot_xds_pushes_total{type="rds"}'] > before['pilot_xds_pushes_total{type="rds"}']
    )
    assert (
        after["pilot_proxy_convergence_time_count"] > before["pilot_proxy_convergence_time_count"]
    )
    assert after['pilot_xds_push_time_count{type="rds"}'] > before.get(
        'pilot_xds_push_time_count{type="rds"}', 0
    )
    assert after["process_resident_memory_bytes"] > 0
    # Istio's counter names, without prometheus-client's _total.
    _, body = await running.get("/metrics")
    text = body.decode()
    assert "# TYPE pilot_xds_pushes counter\n" in text
    assert 'pilot_xds_pushes{type="rds"} ' in text
    assert "# TYPE sailplane_config_errors_total counter\n" in text


async def test_only_proxies_whose_resources_changed_are_pushed(running: Running) -> None:
    plane = running.plane
    sidecar, gateway_node = running.clients["frontend.default"], running.clients["ingress.default"]
    sidecar_versions = versions(plane, "frontend.default")
    sidecar_responses, gateway_responses = sidecar.responses, gateway_node.responses
    applied = plane.reloader.applied
    running.write("gateway.yaml", gateway(8080))
    await eventually(lambda: plane.reloader.applied == applied + 1 and synced(plane))
    await eventually(lambda: gateway_node.responses > gateway_responses)
    assert versions(plane, "frontend.default") == sidecar_versions
    assert sidecar.responses == sidecar_responses
    # A comment changes the files, not the resources: applied, nothing pushed.
    pushes = (await running.metrics())['pilot_xds_pushes_total{type="lds"}']
    running.write("gateway.yaml", "# the public entry\n" + gateway(8080))
    await eventually(lambda: plane.reloader.applied == applied + 2)
    await asyncio.sleep(0.1)
    assert (await running.metrics())['pilot_xds_pushes_total{type="lds"}'] == pushes
    assert (sidecar.responses, gateway_node.responses) > (sidecar_responses, gateway_responses)
    assert sidecar.responses == sidecar_responses


async def test_a_broken_file_changes_nothing_and_is_reported(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    plane = running.plane
    good = {n: versions(plane, n) for n in running.clients}
    before = await running.metrics()
    running.write("vs.yaml", split(0, 100).replace("  http:", "   http:"))
    await eventually(
        lambda: plane.reloader.last_result is not None and plane.reloader.last_result.parse_failed
    )
    assert {n: versions(plane, n) for n in running.clients} == good
    after = await running.metrics()
    assert after["sailplane_config_errors_total"] == before["sailplane_config_errors_total"] + 1
    assert after['sailplane_config_reloads_total{result="rejected"}'] == 1
    configz = await running.configz()
    assert configz["last_load_applied"] is False
    assert [d["line"] for d in configz["diagnostics"]] == [6]
    in_force = {o["name"]: o["source"] for o in configz["in_force"]}
    assert in_force["backend"] == "vs.yaml:1"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(m.startswith("vs.yaml:6:") and "YAML syntax error" in m for m in errors)
    # Saving the same broken file again is not a new error.
    running.write("vs.yaml", split(0, 100).replace("  http:", "   http:") + "\n")
    await asyncio.sleep(0.3)
    assert (await running.metrics())["sailplane_config_errors_total"] == after[
        "sailplane_config_errors_total"
    ]
    # The fix applies.
    applied = plane.reloader.applied
    running.write("vs.yaml", split(0, 100))
    await eventually(lambda: plane.reloader.applied == applied + 1)
    assert (await running.configz())["last_load_applied"] is True


async def test_an_invalid_object_keeps_its_last_good_version(running: Running) -> None:
    plane = running.plane
    applied = plane.reloader.applied
    running.write("vs.yaml", split(110, -10))  # Istio's webhook rejects a negative weight
    await eventually(lambda: plane.reloader.applied == applied + 1)
    mesh = plane.controller.mesh
    assert mesh is not None
    assert [d.weight for d in mesh.virtual_services[0].http[0].route] == [100, 0]
    configz = await running.configz()
    (vs,) = [o for o in configz["in_force"] if o["kind"] == "VirtualService"]
    assert vs["state"] == "retained" and vs["rejected_version"] == "vs.yaml:1"
    lines = {f"{d['file']}:{d['line']}:{d['column']}" for d in configz["diagnostics"]}
    assert "vs.yaml:11:15" in lines  # the `weight: -10` value


async def test_status_of_one_proxy(running: Running, capsys: pytest.CaptureFixture[str]) -> None:
    assert await running.cli("status", "--proxy", "frontend.default") == 0
    out = capsys.readouterr().out
    assert out.startswith("PROXY frontend.default (connected, 1 stream)\n")
    assert "\nROUTES  version " in out and "SYNCED" in out
    assert "outbound|5000|v1|backend.default.svc.cluster.local" in out
    assert await running.cli("status", "--proxy", "nobody.default") == 1
    assert "connected: frontend.default, ingress.default" in capsys.readouterr().err


async def test_diff_is_a_dry_run(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plane = running.plane
    assert await running.cli("diff", "--config-dir", str(running.config_dir)) == 0
    assert capsys.readouterr().out == "no change: this is the configuration in force\n"
    other = tmp_path / "next"
    other.mkdir()
    for name in ("registry.yaml", "gateway.yaml"):
        (other / name).write_text((running.config_dir / name).read_text())
    (other / "vs.yaml").write_text(split(50, 50))
    in_force = versions(plane, "frontend.default")
    assert await running.cli("diff", "--config-dir", str(other)) == 1
    out = capsys.readouterr().out
    assert "  ~ VirtualService default/backend\n" in out
    assert "  frontend.default:\n    ~ route " in out
    assert "  ingress.default: no change\n" in out
    assert versions(plane, "frontend.default") == in_force  # nothing applied
    (other / "vs.yaml").write_text("a: [\n")
    assert await running.cli("diff", "--config-dir", str(other)) == 2


async def test_debug_views_never_ask_the_ca_for_a_certificate(
    running: Running, tmp_path: Path
) -> None:
    """A dry run naming made-up service accounts, and config dumps of proxies
    that are not connected, leave the CA's identities as they were (before
    issue #14, each made the live CA mint a certificate and keep rotating it)."""
    plane = running.plane
    before = plane.identities.identities()
    made_up = "".join(
        textwrap.dedent(
            f"""\
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {{name: fake-{n}}}
            spec: {{address: 10.9.9.{n}, labels: {{app: fake}}, serviceAccount: invented-{n}}}
            """
        )
        for n in range(20)
    )
    files = {
        name: (running.config_dir / name).read_text()
        for name in ("registry.yaml", "gateway.yaml", "vs.yaml")
    }
    files["fake.yaml"] = made_up
    body = json.dumps({"files": files}).encode()
    request = urllib.request.Request(running.url("/debug/diff"), data=body, method="POST")
    answer = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(request).read()))
    assert answer["verdict"] == "would apply"
    for proxy in ("backend-v1.default", "frontend.default"):
        status, _ = await running.get(f"/debug/config_dump?proxy={proxy}")
        assert status == 200
    assert plane.identities.identities() == before
