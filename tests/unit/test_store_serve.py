"""An in-process control plane on a real etcd: an apply reaches the
configuration in force; etcd down keeps the last good one and says so on
/ready and /debug/configz; etcd back resyncs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sailplane.cli import main
from sailplane.server.plane import ControlPlane, ServeOptions
from tests.support.etcd import Etcd
from tests.support.procs import http_get
from tests.unit.test_config_serve import REGISTRY, split


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def apply(*argv: str) -> int:
    return await asyncio.to_thread(main, ["apply", *argv])


async def test_serve_from_etcd_keeps_the_last_good_config_while_etcd_is_down(
    etcd: Etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "registry.yaml").write_text(REGISTRY)
    (mesh / "vs.yaml").write_text(split(100, 0))
    assert await apply("-f", str(mesh), "--config-store", etcd.url()) == 0
    plane = ControlPlane(
        ServeOptions(
            tmp_path / "unused",
            xds_address=None,
            monitor_address=("127.0.0.1", 0),
            config_store=etcd.url(),
        )
    )
    await plane.start()
    try:
        monitor = f"http://127.0.0.1:{plane.monitor_port}"

        async def configz() -> dict[str, object]:
            _, body = await asyncio.to_thread(http_get, f"{monitor}/debug/configz")
            return json.loads(body)  # type: ignore[no-any-return]

        first = plane.version
        assert first and plane.controller.mesh is not None
        assert (await configz())["config_store"] == {"url": etcd.url(), "up": True, "problem": None}
        # An apply reaches the configuration in force through the watch.
        (mesh / "vs.yaml").write_text(split(50, 50))
        assert await apply("-f", str(mesh), "--config-store", etcd.url()) == 0
        await until(lambda: plane.version != first)
        second = plane.version
        # etcd down: the configuration stays, /ready and /debug/configz say why.
        await asyncio.to_thread(etcd.stop)
        await until(lambda: plane.reloader.store.problem is not None)
        status, body = await asyncio.to_thread(http_get, f"{monitor}/ready")
        assert status == 200 and b"config store down" in body, body
        store = (await configz())["config_store"]
        assert isinstance(store, dict) and store["up"] is False
        assert plane.version == second
        # `sailplane status` says so too, and still lists the proxies.
        address = f"127.0.0.1:{plane.monitor_port}"
        assert await asyncio.to_thread(main, ["status", "--monitor-address", address]) == 0
        said = capsys.readouterr().err
        assert f"the config store {etcd.url()} is down" in said, said
        assert f"last good configuration, version {second}" in said, said
        assert await apply("-f", str(mesh), "--config-store", etcd.url()) == 2
        # etcd back: the watch resyncs, and the next apply is served.
        await asyncio.to_thread(etcd.start)
        await until(lambda: plane.reloader.store.problem is None, 30)
        (mesh / "vs.yaml").write_text(split(0, 100))
        assert await apply("-f", str(mesh), "--config-store", etcd.url()) == 0
        await until(lambda: plane.version not in (first, second))
        status, body = await asyncio.to_thread(http_get, f"{monitor}/ready")
        assert (status, body) == (200, b"ready\n")
        assert await asyncio.to_thread(main, ["status", "--monitor-address", address]) == 0
        assert "config store" not in capsys.readouterr().err
    finally:
        await plane.stop()
