"""`bootstrap` and `diff` read the configuration from etcd too (#22: every
command that reads configuration takes --config-store), with a real etcd and
a running server: what they print is what the store holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sailplane.cli import main
from tests.support.etcd import Etcd
from tests.unit.test_config_serve import Running, running, split

__all__ = ["running"]  # a fixture


def apply(url: str, directory: Path) -> None:
    assert main(["apply", "-f", str(directory), "--config-store", url]) == 0


async def test_bootstrap_and_diff_read_the_store(
    etcd: Etcd, running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = etcd.url()
    copy = tmp_path / "copy"
    shutil.copytree(running.config_dir, copy)
    (copy / "vs.yaml").write_text(split(30, 70))
    apply(url, copy)
    capsys.readouterr()

    # bootstrap: the workload as the store has it (frontend is only there).
    out = tmp_path / "frontend.yaml"
    argv = ["bootstrap", "frontend", "--config-store", url, "--xds-address", "127.0.0.1:1"]
    assert main([*argv, "--plaintext", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["node"]["id"] == "frontend.default"
    every = tmp_path / "all"
    assert main(["bootstrap", "--all", *argv[2:], "--plaintext", "-o", str(every)]) == 0
    assert {p.name for p in every.iterdir()} >= {"frontend.default.yaml", "backend-v1.default.yaml"}
    capsys.readouterr()

    # diff: the store's 30/70 against the server's 100/0, nothing applied.
    assert await running.cli("diff", "--config-store", url, "--json") == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["verdict"] == "would apply"
    changed = json.dumps(answer)
    assert "VirtualService" in changed and "default/backend" in changed
    assert await running.cli("diff", "--config-store", url) == 1
    assert "VirtualService default/backend" in capsys.readouterr().out
    # Both at once is a usage error; an unreachable store is one line, exit 2.
    both = ["diff", "--config-store", url, "--config-dir", str(copy)]
    with pytest.raises(SystemExit) as usage:
        main(both)
    assert usage.value.code == 2
    assert await running.cli("diff", "--config-store", "etcd://127.0.0.1:1") == 2
    assert "127.0.0.1:1" in capsys.readouterr().err
    assert main(["bootstrap", "frontend", "--config-store", "etcd://127.0.0.1:1",
                 "--xds-address", "127.0.0.1:1", "--plaintext"]) == 1  # fmt: skip


def test_bootstrap_refuses_a_store_and_a_directory(
    etcd: Etcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bootstrap", "frontend", "--config-store", etcd.url(), "--config-dir", str(tmp_path)]
    assert main([*argv, "--xds-address", "127.0.0.1:1", "--plaintext"]) == 1
    assert "not both" in capsys.readouterr().err
