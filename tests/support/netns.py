"""Pods in network namespaces, for end-to-end tests of what needs real
networking (iptables capture, original destinations): each pod is its own
netns with ``lo`` up and ``eth0`` on one private L2 segment (a bridge that
lives in a namespace of its own), so nothing of the host's default
namespace is touched.

Root only (``skip_reason()`` says why not). ``PodNetwork`` is a context
manager: leaving it, even on failure, kills every process it started and
every process left inside its namespaces, and deletes the namespaces, which
takes their veths and bridge with them. Namespace names carry the creating
pid, so ``remove_stale()`` can clear what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from tests.support.ci import skip_unless_ci

PREFIX = "spt"
SUBNET = "10.250.0"  # a /24 that exists only inside the test namespaces
FIRST_HOST = 11
_STALE = re.compile(rf"^{PREFIX}(\d+)-")


def skip_reason() -> str | None:
    """Why these tests cannot run here, or None (in CI: an error, see ci.py)."""
    return skip_unless_ci(_missing())


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, iptables); CI runs as root"
    for tool in ("ip", "setpriv", "iptables-save", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (iproute2, util-linux, iptables)"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs inside, then delete it (and its links)."""
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def remove_stale() -> None:
    """Delete test namespaces whose creating process is gone."""
    for name in _namespaces():
        match = _STALE.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            _delete_namespace(name)


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    netns: str
    ip: str

    def argv(
        self, argv: Sequence[str], uid: int | None = None, gid: int | None = None
    ) -> list[str]:
        """``argv`` run inside the pod, as ``uid``/``gid`` when given (no
        supplementary groups: iptables' owner match sees exactly these)."""
        user: list[str] = []
        if uid is not None or gid is not None:
            user = ["setpriv", "--clear-groups"]
            user += ["--reuid", str(uid if uid is not None else 0)]
            user += ["--regid", str(gid if gid is not None else (uid or 0))]
        return ["ip", "netns", "exec", self.netns, *user, *argv]


class PodNetwork:
    """Pods named ``names`` on ``SUBNET``.0/24 (``.11``, ``.12``, ...)."""

    def __init__(self, names: Sequence[str], subnet: str = SUBNET) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError("give distinct pod names")
        self._token = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self._names = list(names)
        self._subnet = subnet
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        self.pods: dict[str, Pod] = {}
        self.switch = f"{self._token}-sw"

    def __enter__(self) -> PodNetwork:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        self._created.append(name)
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        remove_stale()
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, name in enumerate(self._names):
            pod = Pod(name, f"{self._token}-{index}", f"{self._subnet}.{FIRST_HOST + index}")
            self._add_namespace(pod.netns)
            port = f"p{index}"
            link = ("link", "add", port, "type", "veth", "peer", "name", "eth0")
            _ip("-n", self.switch, *link, "netns", pod.netns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", pod.netns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
            _ip("-n", pod.netns, "link", "set", "eth0", "up")
            self.pods[name] = pod

    def __getitem__(self, name: str) -> Pod:
        return self.pods[name]

    def run(
        self,
        pod: Pod,
        argv: Sequence[str],
        uid: int | None = None,
        gid: int | None = None,
        timeout: float = 20.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion inside ``pod``; output captured, status not checked."""
        return subprocess.run(
            pod.argv(argv, uid, gid), capture_output=True, text=True, timeout=timeout
        )

    def spawn(
        self, pod: Pod, argv: Sequence[str], uid: int | None = None, gid: int | None = None
    ) -> subprocess.Popen[str]:
        """Start inside ``pod`` (stdout piped, text); stopped by :meth:`close`."""
        process = subprocess.Popen(
            pod.argv(argv, uid, gid),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._processes.append(process)
        return process

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        self._processes.clear()
        for name in reversed(self._created):
            _delete_namespace(name)
        self._created.clear()
