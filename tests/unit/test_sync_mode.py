"""Sync mode on a real etcd: ``serve --config-dir DIR --config-store URL``
applies DIR into the store on every change (``apply --prune``) and serves from
the store, so a replica that reads only the store serves the same thing; an
object with an error keeps its last good version in the store, the error named
by file and line; etcd down, the edit waits and is applied when it is back."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from sailplane.cli import main
from sailplane.server.plane import ControlPlane, ServeOptions
from sailplane.store import open_etcd
from tests.support.etcd import Etcd
from tests.support.procs import http_get
from tests.unit.test_config_serve import REGISTRY, split
from tests.unit.test_store_serve import until

VS = "VirtualService/default/backend"


def replica(config_dir: Path, url: str, name: str, sync: bool) -> ControlPlane:
    return ControlPlane(
        ServeOptions(
            config_dir,
            xds_address=None,
            monitor_address=("127.0.0.1", 0),
            debounce_quiet=0.05,
            debounce_max=0.2,
            config_store=url,
            replica_name=name,
            sync=sync,
        )
    )


def stored_vs(url: str) -> str:
    store = open_etcd(url, 1 << 20)
    try:
        return store.list().objects[VS][0].text
    finally:
        store.stop()


async def configz(plane: ControlPlane) -> dict[str, object]:
    url = f"http://127.0.0.1:{plane.monitor_port}/debug/configz"
    _, body = await asyncio.to_thread(http_get, url)
    return json.loads(body)  # type: ignore[no-any-return]


async def test_sync_mode_serves_the_store_and_keeps_the_last_good_object(
    etcd: Etcd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sailplane")
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "registry.yaml").write_text(REGISTRY)
    (mesh / "vs.yaml").write_text(split(100, 0))
    # Something the directory does not have: --prune deletes it.
    stray = tmp_path / "stray.yaml"
    stray.write_text(split(10, 90).replace("name: backend", "name: stray"))
    assert (
        await asyncio.to_thread(main, ["apply", "-f", str(stray), "--config-store", etcd.url()])
        == 0
    )
    syncer = replica(mesh, etcd.url(), "syncer", sync=True)
    reader = replica(tmp_path / "unused", etcd.url(), "reader", sync=False)
    assert syncer.syncer is not None
    syncer.syncer.retry = 0.5
    await syncer.start()
    await reader.start()
    try:
        # The first sync came before the syncer's first load: both serve DIR.
        first = syncer.version
        assert first and reader.version == first
        store = open_etcd(etcd.url(), 1 << 20)
        assert set(store.list().objects) >= {VS} and all(
            "stray" not in p for p in store.list().objects
        )
        store.stop()

        # An edit of DIR reaches the replica that reads only the store.
        (mesh / "vs.yaml").write_text(split(30, 70))
        await until(lambda: reader.version not in ("", first))
        second = reader.version
        await until(lambda: syncer.version == second)
        assert "weight: 70" in stored_vs(etcd.url())

        # An error: the store keeps the last good VirtualService, the syncer's
        # log and /debug/configz name vs.yaml and its line.
        errors_before = syncer.metrics.config_errors._value.get()
        (mesh / "vs.yaml").write_text(split(30, 60))  # weights sum to 90
        await until(lambda: bool(syncer.syncer and syncer.syncer.diagnostics))
        sync = (await configz(syncer))["sync"]
        assert isinstance(sync, dict) and sync["up"] is True, sync
        files = {(d["file"], d["severity"]) for d in sync["diagnostics"]}
        assert ("vs.yaml", "error") in files, sync
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("vs.yaml:")]
        assert any(line.startswith("vs.yaml:8:5:") and "sum to 90" in line for line in logged), (
            logged
        )
        assert syncer.metrics.config_errors._value.get() > errors_before
        assert "weight: 70" in stored_vs(etcd.url())
        await asyncio.sleep(0.3)
        assert reader.version == syncer.version == second

        # etcd down: the edit waits (the configuration in force stays), then
        # the periodic retry applies it once etcd is back, with no new edit.
        await asyncio.to_thread(etcd.stop)
        (mesh / "vs.yaml").write_text(split(0, 100))
        await until(lambda: syncer.syncer is not None and syncer.syncer.problem is not None)
        assert (await configz(syncer))["sync"]["up"] is False  # type: ignore[index]
        assert reader.version == syncer.version == second
        await asyncio.to_thread(etcd.start)
        await until(lambda: reader.version not in ("", first, second), 30)
        await until(lambda: syncer.version == reader.version, 30)
        assert "weight: 100" in stored_vs(etcd.url())
        assert syncer.syncer.problem is None
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        await reader.stop()
        await syncer.stop()


def test_serve_with_a_directory_and_a_store_is_sync_mode_not_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A directory that does not exist is refused before anything starts.
    argv = [
        "serve",
        "--config-dir",
        str(tmp_path / "absent"),
        "--config-store",
        "etcd://127.0.0.1:1",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "not both" not in err
