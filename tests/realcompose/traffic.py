"""HTTP as a user sends it from the host, and the statistics to judge it."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it completed
    status: int  # 0: no HTTP answer at all
    version: str  # x-app-version of the backend that answered ('' if none)
    body: bytes = b""


def get(port: int, path: str, timeout: float = 5.0) -> Answer:
    """One request on a new connection (so each is routed on its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        version = response.getheader("x-app-version") or ""
        return Answer(time.monotonic(), response.status, version, body)
    except OSError:
        return Answer(time.monotonic(), 0, "")
    finally:
        conn.close()


def versions(port: int, path: str, n: int) -> Counter[str]:
    """n requests; the versions that answered 200, and 'status N' for others."""
    counts: Counter[str] = Counter()
    for _ in range(n):
        answer = get(port, path)
        counts[answer.version if answer.status == 200 else f"status {answer.status}"] += 1
    return counts


def frontend_backends(port: int, n: int) -> Counter[str]:
    """n calls to the frontend; the backend version each one reached."""
    counts: Counter[str] = Counter()
    for _ in range(n):
        answer = get(port, "/")
        if answer.status != 200:
            counts[f"status {answer.status}"] += 1
            continue
        backend = json.loads(answer.body).get("backend", {})
        counts[str(backend.get("version", backend.get("error", "?")))] += 1
    return counts


def within_sigmas(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """Is count of n a plausible binomial(n, p) draw?"""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@dataclass
class Load:
    """Requests sent back to back from a thread until stopped."""

    port: int
    path: str
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.answers.append(get(self.port, self.path, timeout=3.0))
            time.sleep(0.01)

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]
