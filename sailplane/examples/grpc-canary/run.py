"""A canary split between two versions of a gRPC service with no sidecar
anywhere: `python examples/grpc-canary/run.py`.

It starts `sailplane serve` on a copy of mesh/ (free ports on 127.0.0.1, a
fresh CA in a temporary directory), writes a gRPC bootstrap for each
application with `sailplane bootstrap NAME --grpc`, starts the echo servers
v1 (127.0.0.21) and v2 (127.0.0.22) and a client, and shows:

1. the VirtualService's 80/20 split, over --calls calls;
2. the split after the weights are edited to 50/50 in the file, live (the
   client keeps its channel);
3. a caller from outside the mesh (no certificate) refused by the servers'
   mTLS, and a caller of the mesh whose identity the AuthorizationPolicy
   does not allow refused by the servers' RBAC (PERMISSION_DENIED);
4. that gRPC rejected nothing sailplane sent (no NACK in /debug/syncz).

The last line is the same as JSON. Everything it starts is stopped at the
end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PORT = 50051
TARGET = f"xds:///echo.default.svc.cluster.local:{PORT}"
SERVERS = {"echo-v1": ("127.0.0.21", "v1"), "echo-v2": ("127.0.0.22", "v2")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process started, all stopped on exit. They stay in this
    process's group, so whoever runs this can stop them all at once too."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[str]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, stdin: bool = False
    ) -> subprocess.Popen[str]:
        log: IO[str] = (self.logs / f"{name}.log").open("w")
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdin else log,
            stderr=log,
            env={**os.environ, **(env or {})},
            text=True,
        )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def wait_ready(monitor: str, deadline: float = 30) -> None:
    until = time.monotonic() + deadline
    while True:
        with contextlib.suppress(OSError):
            if get(f"{monitor}/ready").startswith("ready"):
                return
        if time.monotonic() > until:
            raise SystemExit(f"sailplane did not become ready at {monitor}")
        time.sleep(0.1)


def sailplane(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "sailplane", *argv], check=True, capture_output=True)


class Client:
    """A proxyless client process: asks for N calls, reads the outcomes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def calls(self, count: int) -> dict[str, int]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the client stopped; see its log")
        return json.loads(line)  # type: ignore[no-any-return]


def acked_routes(monitor: str, proxy: str) -> str | None:
    """The route version the client last acknowledged, as sailplane saw it."""
    for stream in json.loads(get(f"{monitor}/debug/syncz")):
        if stream["proxy"].split(".")[0] == proxy:
            routes = stream["types"].get("routes", {})
            if routes.get("state") == "SYNCED":
                return routes.get("acked")  # type: ignore[no-any-return]
    return None


def wait_acked_routes(monitor: str, proxy: str, before: str | None, deadline: float = 20) -> None:
    """Until gRPC has applied the edited routes: sampling the split instead
    can mistake a lucky batch of the old weights for the new ones."""
    if before is None:
        raise SystemExit(f"{proxy} has no acknowledged routes to compare with")
    until = time.monotonic() + deadline
    while acked_routes(monitor, proxy) in (before, None):
        if time.monotonic() > until:
            raise SystemExit(f"{proxy} did not acknowledge the edited routes in {deadline} s")
        time.sleep(0.05)


def set_weights(mesh: Path, v1: int, v2: int) -> None:
    """Edit the VirtualService's weights as a user would, saved atomically."""
    canary = mesh / "canary.yaml"
    text = canary.read_text().replace("weight: 80", f"weight: {v1}")
    text = text.replace("weight: 20", f"weight: {v2}")
    canary.with_suffix(".tmp").write_text(text)
    os.replace(canary.with_suffix(".tmp"), canary)


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sailplane-grpc-canary-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(calls: int, root: Path) -> dict[str, Any]:
    mesh = root / "mesh"
    shutil.copytree(HERE / "mesh", mesh)
    (root / "logs").mkdir()
    processes = Processes(root / "logs")
    xds, secure, monitor_port = free_port(), free_port(), free_port()
    monitor = f"http://127.0.0.1:{monitor_port}"
    ca = ["--ca-dir", str(root / "ca")]
    try:
        processes.start(
            "sailplane",
            [sys.executable, "-m", "sailplane", "serve", "--config-dir", str(mesh), *ca,
             "--xds-address", f"127.0.0.1:{xds}", "--secure-xds-address", f"127.0.0.1:{secure}",
             "--monitor-address", f"127.0.0.1:{monitor_port}"],
        )  # fmt: skip
        wait_ready(monitor)
        bootstraps = {}
        for name in (*SERVERS, "echo-client", "intruder"):
            bootstraps[name] = root / name / "bootstrap.json"
            bootstraps[name].parent.mkdir()
            where = ["--xds-address", f"127.0.0.1:{secure}", "-o", str(bootstraps[name])]
            sailplane("bootstrap", name, "--grpc", "--config-dir", str(mesh), *ca, *where)
        app = str(HERE / "app.py")
        for name, (address, version) in SERVERS.items():
            env = {"GRPC_XDS_BOOTSTRAP": str(bootstraps[name])}
            processes.start(
                name, [sys.executable, app, "server", f"{address}:{PORT}", version], env
            )
        env = {"GRPC_XDS_BOOTSTRAP": str(bootstraps["echo-client"])}
        client = Client(
            processes.start("client", [sys.executable, app, "client", TARGET], env, True)
        )
        env = {"GRPC_XDS_BOOTSTRAP": str(bootstraps["intruder"])}
        intruder = Client(
            processes.start("intruder", [sys.executable, app, "client", TARGET], env, True)
        )
        stranger = Client(
            processes.start("stranger", [sys.executable, app, "client", f"127.0.0.21:{PORT}"],
                            stdin=True)
        )  # fmt: skip

        client.calls(1)  # the first call waits for the configuration and both servers
        before = client.calls(calls)
        print(f"80/20 VirtualService, {calls} calls:  {before}")

        routes_before = acked_routes(monitor, "echo-client")
        set_weights(mesh, 50, 50)
        moved_at = time.monotonic()
        wait_acked_routes(monitor, "echo-client", routes_before)
        moved = round(time.monotonic() - moved_at, 2)
        after = client.calls(calls)
        print(f"edited to 50/50, live ({moved} s), {calls} calls:  {after}")

        outsider = stranger.calls(3)
        print(f"a caller without a mesh certificate:  {outsider}")
        denied = intruder.calls(3)
        print(f"a caller the AuthorizationPolicy does not allow:  {denied}")

        streams = json.loads(get(f"{monitor}/debug/syncz"))
        nacks = [
            f"{s['proxy']} {kind}: {state['error']}"
            for s in streams
            for kind, state in s["types"].items()
            if state["state"] == "NACKED" or state["error"]
        ]
        print(f"NACKs from gRPC: {len(nacks)} {nacks if nacks else ''}")
        return {
            "before": before,
            "after": after,
            "moved_seconds": moved,
            "outsider": outsider,
            "denied": denied,
            "nacks": nacks,
            "proxies": sorted(s["proxy"] for s in streams),
        }
    finally:
        processes.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per split (default 500)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args()
    with workspace(args.keep) as root:
        print(json.dumps(run(args.calls, root), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
