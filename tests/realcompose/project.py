"""The compose project under test: a copy of the checkout, run unchanged.

The copy is what the user edits in these checks (the mesh YAML that
sailplane watches through its bind mount), so the checkout itself is never
touched. Only environment variables differ from a user's run: the base
image and free host ports for what the file publishes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.realcompose.engine import Engine

ROOT = Path(__file__).resolve().parents[2]


def copy_checkout(target: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) under target."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        dest = target / os.fsdecode(name)
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, dest)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Project:
    engine: Engine
    directory: Path
    base_image: str
    ingress_port: int
    frontend_port: int
    monitor_port: int
    # Compose files (-f), in order; none: docker-compose.yml alone, as a user runs it.
    files: tuple[str, ...] = ()

    @property
    def mesh(self) -> Path:
        return self.directory / "sailplane" / "examples" / "weather" / "mesh"

    def env(self) -> dict[str, str]:
        return {
            **self.engine.env(),
            "SAILPLANE_BASE_IMAGE": self.base_image,
            "SAILPLANE_INGRESS_PORT": str(self.ingress_port),
            "SAILPLANE_FRONTEND_PORT": str(self.frontend_port),
            "SAILPLANE_MONITOR_PORT": str(self.monitor_port),
        }

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        done = subprocess.run(
            [
                "docker",
                "compose",
                "--project-directory",
                str(self.directory),
                *(arg for name in self.files for arg in ("-f", str(self.directory / name))),
                *args,
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", "--all", service).split()
        if len(ids) != 1:
            raise RuntimeError(f"{service}: {len(ids)} containers")
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        data = json.loads(self.engine.docker("inspect", self.container(service)))
        assert isinstance(data, list) and len(data) == 1
        found: dict[str, Any] = data[0]
        return found

    def logs(self, service: str) -> list[str]:
        out = self.compose("logs", "--no-color", "--no-log-prefix", service)
        return out.splitlines()

    def syncz(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.monitor_port}/debug/syncz"
        with urllib.request.urlopen(url, timeout=2) as response:
            data = json.load(response)
        assert isinstance(data, list)
        return data

    def wait(self, what: str, ready: Any, timeout: float = 120.0) -> float:
        """Poll ready() until it is true; the seconds it took."""
        start = time.monotonic()
        last: object = None
        while time.monotonic() - start < timeout:
            try:
                if ready():
                    return time.monotonic() - start
            except Exception as exc:  # not up yet: keep asking
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last!r})")
