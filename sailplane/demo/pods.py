"""Pods in network namespaces: what ``sailplane demo`` runs in as root, and
what the end-to-end tests of iptables capture run in.

Each pod is a network namespace of its own with ``lo`` up and ``eth0`` on one
private L2 segment: a bridge that lives in a namespace of its own, so the
host's namespace is touched only when asked for (``host_link``: one veth
into the host with the segment's ``.1``, so that programs on the host, the
control plane among them, reach the pods and the pods reach them; the link
goes with the bridge's namespace). Names resolve in a pod through
``/etc/netns/NAMESPACE/hosts``, which ``ip netns exec`` puts in place of
``/etc/hosts``.

``PodNetwork`` is a context manager: leaving it, even on failure, kills every
process it started and every process left inside its namespaces, deletes the
namespaces (their veths and bridge with them) and their ``/etc/netns``
directories. Namespace names carry the creating pid, so a later network
clears what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from sailplane.errors import DemoError

T = TypeVar("T")

FIRST_HOST = 11  # pods are .11, .12, ...; .1 is the host's end of host_link
HOST_ADDRESS = 1
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
CLONE_NEWNET = 0x40000000
TOOLS = ("ip", "setpriv", "iptables-save", "iptables-restore")


def missing() -> str | None:
    """Why pods cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, iptables)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (iproute2, util-linux, iptables)"
    return None


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise DemoError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs inside, then delete it (and its links, and
    its ``/etc/netns`` directory)."""
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def remove_stale(prefix: str) -> None:
    """Delete the namespaces named ``PREFIX<pid>-...`` whose pid is gone."""
    stale = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    for name in _namespaces():
        match = stale.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            _delete_namespace(name)
    if NETNS_ETC.is_dir():
        for path in NETNS_ETC.iterdir():
            match = stale.match(path.name)
            if match and not os.path.exists(f"/proc/{match.group(1)}"):
                shutil.rmtree(path, ignore_errors=True)


def free_subnet(candidates: Iterable[str]) -> str:
    """The first ``A.B.C`` of ``candidates`` whose /24 overlaps no address or
    route of the host's namespace (a host link there must not shadow one)."""
    used = []
    for family in ("addr", "route"):
        for entry in json.loads(_ip("-4", "-j", family, "show") or "[]"):
            if family == "addr":
                used += [
                    ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
                    for a in entry.get("addr_info", [])
                ]
            elif entry.get("dst") not in (None, "default"):
                used.append(ipaddress.ip_network(entry["dst"], strict=False))
    for subnet in candidates:
        network = ipaddress.ip_network(f"{subnet}.0/24")
        if not any(network.overlaps(u) for u in used):
            return subnet
    raise DemoError("no free private /24 for the pods' network")


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

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """``function()`` on a thread inside the pod's namespace: the sockets
        it opens are the pod's (``setns`` moves only the calling thread)."""
        return call_in(self.netns, function, timeout)


def call_in(netns: str, function: Callable[[], T], timeout: float = 10.0) -> T:
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(NETNS_RUN / netns, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns {netns}: {os.strerror(error)}")
            finally:
                os.close(fd)
            result.append(function())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if failure:
        raise failure[0]
    if not result:
        raise TimeoutError(f"no answer from inside {netns} within {timeout:g}s")
    return result[0]


class PodNetwork:
    """Pods named ``names`` on ``SUBNET``.0/24 (``.11``, ``.12``, ... unless
    ``addresses`` gives a pod's own); ``hosts``: names every pod resolves
    (name -> address)."""

    def __init__(
        self,
        names: Sequence[str],
        subnet: str,
        prefix: str,
        *,
        host_link: bool = False,
        hosts: Mapping[str, str] | None = None,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError("give distinct pod names")
        if len(names) > 240:
            raise ValueError(f"{len(names)} pods: at most 240 on one /24")
        self._token = f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"
        self._prefix = prefix
        self._names = list(names)
        self._subnet = subnet
        self._host_link = host_link
        self._hosts = dict(hosts or {})
        self._addresses = dict(addresses or {})
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        self.pods: dict[str, Pod] = {}
        self.switch = f"{self._token}-sw"
        self.prefix = f"{self._token}-"  # every pod's namespace: PREFIX<index>
        self.host_ip = f"{subnet}.{HOST_ADDRESS}" if host_link else None
        self._host_end: str | None = None

    def __enter__(self) -> Self:
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

    def address_of(self, index: int) -> str:
        name = self._names[index]
        return self._addresses.get(name, f"{self._subnet}.{FIRST_HOST + index}")

    def _add_namespace(self, name: str) -> None:
        self._created.append(name)
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        remove_stale(self._prefix)
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        if self._host_link:
            # Named from the token's random part: unique in the host's
            # namespace, and at most 15 characters.
            host_end = f"sp{self._token.rsplit('-', 1)[1]}h"
            self._host_end = host_end
            link = ("link", "add", "host", "type", "veth", "peer", "name", host_end)
            _ip("-n", self.switch, *link, "netns", str(os.getpid()))
            _ip("-n", self.switch, "link", "set", "host", "master", "br0", "up")
            _ip("addr", "add", f"{self.host_ip}/24", "dev", host_end)
            _ip("link", "set", host_end, "up")
        for index, name in enumerate(self._names):
            pod = Pod(name, f"{self._token}-{index}", self.address_of(index))
            self._add_namespace(pod.netns)
            port = f"p{index}"
            link = ("link", "add", port, "type", "veth", "peer", "name", "eth0")
            _ip("-n", self.switch, *link, "netns", pod.netns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", pod.netns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
            _ip("-n", pod.netns, "link", "set", "eth0", "up")
            self._write_hosts(pod)
            self.pods[name] = pod

    def _write_hosts(self, pod: Pod) -> None:
        if not self._hosts:
            return
        directory = NETNS_ETC / pod.netns
        directory.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{address} {name}" for name, address in sorted(self._hosts.items())]
        (directory / "hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (directory / "hosts").chmod(0o644)

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
        if self._host_end is not None:
            # Its peer's namespace going would take it too, but only later:
            # the kernel frees a namespace asynchronously.
            subprocess.run(["ip", "link", "del", self._host_end], capture_output=True, timeout=10)
            self._host_end = None
        for name in reversed(self._created):
            _delete_namespace(name)
        self._created.clear()
