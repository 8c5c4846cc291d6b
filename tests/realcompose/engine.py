"""A Docker engine of the test's own, and everything it changed undone after.

``dockerd`` runs with its own socket, exec root and pidfile, so it neither
needs nor disturbs another engine on the machine. Its data root is kept in
the cache directory between runs (image layers are a cache like any other:
``docker compose build`` rebuilds whatever changed). On the way out the
engine is stopped and the host is put back as it was found: the iptables
rules and chains Docker added (and the FORWARD policy it sets to DROP) are
removed one by one, ``net.ipv4.ip_forward`` gets its old value, and bridges
that appeared are deleted.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.realcompose.report import step

# Debian's packages: the engine (dockerd, containerd, runc, tini as
# docker-init), debootstrap for the base image, iptables for the engine.
PACKAGES = ("docker.io", "debootstrap", "iptables")
FORWARD_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")
IPTABLES = ("iptables", "ip6tables")


@dataclass(frozen=True)
class Engine:
    socket: Path
    config_dir: Path  # DOCKER_CONFIG: holds cli-plugins/docker-compose
    log: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.config_dir),
        }

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run(
            ["docker", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {shlex.join(args)}: {done.stderr.strip()}")
        return done.stdout


def install_packages() -> None:
    missing = [p for p in PACKAGES if not _installed(p)]
    if not missing:
        return
    with step(f"apt-get install {' '.join(missing)}"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=env,
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )


def _installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return done.returncode == 0 and "install ok installed" in done.stdout


# -- the host's state, before and after ---------------------------------------


@dataclass(frozen=True)
class HostState:
    rules: dict[str, str]  # iptables-save output per command
    ip_forward: str
    links: frozenset[str]


def host_state() -> HostState:
    rules = {}
    for command in IPTABLES:
        if shutil.which(f"{command}-save"):
            rules[command] = _save(command)
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    names = frozenset(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    return HostState(rules, FORWARD_SYSCTL.read_text().strip(), names)


def _save(command: str) -> str:
    return subprocess.run([f"{command}-save"], capture_output=True, text=True, check=True).stdout


def restore_host(before: HostState) -> list[str]:
    """Undo what the engine added; returns what was undone, for the log."""
    undone: list[str] = []
    for command, saved in before.rules.items():
        undone += _restore_rules(command, saved, _save(command))
    if FORWARD_SYSCTL.read_text().strip() != before.ip_forward:
        FORWARD_SYSCTL.write_text(before.ip_forward + "\n")
        undone.append(f"net.ipv4.ip_forward={before.ip_forward}")
    for name in sorted(host_state().links - before.links):
        if subprocess.run(["ip", "link", "delete", name], capture_output=True).returncode == 0:
            undone.append(f"link {name}")
    return undone


def _tables(saved: str) -> dict[str, tuple[dict[str, str], list[str]]]:
    """table -> (chain -> policy, rules as `-A ...` lines)."""
    tables: dict[str, tuple[dict[str, str], list[str]]] = {}
    current = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = ({}, [])
        elif line.startswith(":") and current:
            chain, policy = line[1:].split()[:2]
            tables[current][0][chain] = policy
        elif line.startswith("-A ") and current:
            tables[current][1].append(line)
    return tables


def _restore_rules(command: str, before: str, after: str) -> list[str]:
    undone = []
    old, new = _tables(before), _tables(after)
    for table, (chains, rules) in new.items():
        old_chains, old_rules = old.get(table, ({}, []))
        kept = set(old_rules)
        # Rules first (newest first), then the chains they jumped to.
        for rule in reversed(rules):
            if rule not in kept:
                args = shlex.split(rule)
                args[0] = "-D"
                _run(command, "-t", table, *args)
                undone.append(f"{command} -t {table} {shlex.join(args)}")
        for chain, policy in chains.items():
            if policy == "-":  # a user-defined chain: gone if it is new
                if chain not in old_chains:
                    _run(command, "-t", table, "-F", chain)
                    _run(command, "-t", table, "-X", chain)
                    undone.append(f"{command} -t {table} -X {chain}")
            elif policy != (want := old_chains.get(chain, "ACCEPT")):  # a built-in one
                _run(command, "-t", table, "-P", chain, want)
                undone.append(f"{command} -t {table} -P {chain} {want}")
    return undone


def _run(*args: str) -> None:
    subprocess.run(list(args), capture_output=True, check=False)


# -- the engine ------------------------------------------------------------------


@contextlib.contextmanager
def docker_engine(cache: Path, compose_binary: Path) -> Iterator[Engine]:
    """Start dockerd; yield it; stop it and restore the host, even on failure."""
    run_dir = Path("/run/sailplane-realcompose")
    pidfile = run_dir / "docker.pid"
    _stop_leftover(pidfile)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dir = run_dir / "config"
    (config_dir / "cli-plugins").mkdir(parents=True, exist_ok=True)
    plugin = config_dir / "cli-plugins" / "docker-compose"
    shutil.copy2(compose_binary, plugin)
    plugin.chmod(0o755)
    engine = Engine(run_dir / "docker.sock", config_dir, run_dir / "dockerd.log")
    before = host_state()
    process: subprocess.Popen[bytes] | None = None
    try:
        with step("start dockerd"), engine.log.open("wb") as log:
            process = subprocess.Popen(
                [
                    "dockerd",
                    "--host",
                    f"unix://{engine.socket}",
                    "--data-root",
                    str(cache / "docker"),
                    "--exec-root",
                    str(run_dir / "exec"),
                    "--pidfile",
                    str(pidfile),
                    "--storage-driver",
                    "overlay2",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            _wait_ready(engine, process)
        yield engine
    finally:
        with step("stop dockerd and restore the host"):
            if process is not None:
                _stop(process)
            for line in restore_host(before):
                print(f"    undone: {line}")


def _wait_ready(engine: Engine, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited {process.returncode}: see {engine.log}")
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            env=engine.env(),
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            print(f"    dockerd {probe.stdout.strip()} on {engine.socket}")
            return
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer within 60 s: see {engine.log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _stop_leftover(pidfile: Path) -> None:
    """A run killed before its cleanup leaves its dockerd: stop it first."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            os.kill(pid, 0)
            time.sleep(0.2)
