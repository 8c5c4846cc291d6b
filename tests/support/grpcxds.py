"""Driving proxyless gRPC processes (tests/support/grpcecho.py) in e2e tests:
their bootstraps from `sailplane bootstrap --grpc`, a client driven over its
stdin, and the check that gRPC NACKed nothing sailplane sent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.support.mesh import Mesh, WorkloadSpec
from tests.support.procs import PYTHON, Process

ECHO = str(Path(__file__).resolve().parent / "grpcecho.py")


def grpc_bootstrap(mesh: Mesh, spec: WorkloadSpec, *extra: str) -> Path:
    """`sailplane bootstrap NAME --grpc`: the plaintext xDS port with
    ``--plaintext`` in ``extra``, else the mTLS one (certificates from the
    plane's CA, next to the bootstrap)."""
    out = mesh.config_dir.parent / f"grpc-{spec.name}" / "bootstrap.json"
    out.parent.mkdir(exist_ok=True)
    port = mesh.xds_port if "--plaintext" in extra else mesh.secure_xds_port
    subprocess.run(
        [
            PYTHON,
            "-m",
            "sailplane",
            "bootstrap",
            spec.name,
            "--grpc",
            "--namespace",
            spec.namespace,
            "--config-dir",
            str(mesh.config_dir),
            "--ca-dir",
            str(mesh.ca_dir),
            "--xds-address",
            f"127.0.0.1:{port}",
            "-o",
            str(out),
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    return out


def start_xds_server(mesh: Mesh, spec: WorkloadSpec, bootstrap: Path, port: int) -> Process:
    """An xDS-enabled echo server (gRFC A36) on the workload's address, in
    the mesh's process group (stopped whatever happens)."""
    version = spec.labels.get("version", spec.name)
    return mesh.group.start(
        f"{spec.name}-{port}",
        [PYTHON, ECHO, "serve", f"{spec.address}:{port}", version, "--xds"],
        env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)},
    )


class GrpcClient:
    """One grpcio xDS client process, driven over its stdin."""

    def __init__(self, bootstrap: Path, log: Path) -> None:
        self.stderr = log.open("wb")
        self.popen = subprocess.Popen(
            [PYTHON, ECHO, "client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
            text=True,
            start_new_session=True,
        )

    def run(self, target: str, count: int, method: str = "Hello") -> dict[str, int]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(f"{target} {method} {count}\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        assert line, "the gRPC client died"
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)
        for pipe in (self.popen.stdin, self.popen.stdout, self.stderr):
            if pipe is not None:
                pipe.close()


def no_nacks(mesh: Mesh) -> None:
    """Nothing sailplane sent was rejected by gRPC (its NACK records)."""
    for stream in mesh.syncz():
        for kind, state in stream["types"].items():
            assert state["state"] != "NACKED", (stream["proxy"], kind, state)
            assert not state["error"], (stream["proxy"], kind, state)


def missing_listeners(mesh: Mesh) -> set[str]:
    """Listener names some stream asked for that sailplane does not have."""
    out: set[str] = set()
    for stream in mesh.syncz():
        state: dict[str, Any] = stream["types"].get("listeners", {})
        out.update(state.get("missing", ()))
    return out
