"""The demo's clients: traffic through the ingress, inside the mesh, and from
a legacy client without a sidecar. Each runs on a thread at a fixed rate and
tallies what it gets back.

Outcomes are the backend's version (the ``x-app-version`` header or, for the
frontend, the version in its JSON), ``HTTP <code>`` for an error answer, or
``refused`` when the connection fails: what a plaintext client sees when the
backend's sidecar requires mTLS.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REFUSED = "refused"
TIMEOUT = 5.0


class Tally:
    """Outcomes per stream: a short window for rates, and counts since the
    last :meth:`reset` (the demo resets when the configuration changes)."""

    def __init__(self, window: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._recent: deque[tuple[float, str]] = deque()
        self._since: dict[str, Counter[str]] = {}
        self._total: dict[str, Counter[str]] = {}

    def add(self, stream: str, outcome: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, stream))
            while self._recent and self._recent[0][0] < now - self._window:
                self._recent.popleft()
            self._since.setdefault(stream, Counter())[outcome] += 1
            self._total.setdefault(stream, Counter())[outcome] += 1

    def rate(self, stream: str, seconds: float = 1.0) -> float:
        """Outcomes per second over the last ``seconds``."""
        cutoff = time.monotonic() - seconds
        with self._lock:
            count = sum(1 for t, s in self._recent if s == stream and t >= cutoff)
        return count / seconds

    def since_reset(self, stream: str) -> Counter[str]:
        with self._lock:
            return Counter(self._since.get(stream, Counter()))

    def total(self, stream: str) -> Counter[str]:
        with self._lock:
            return Counter(self._total.get(stream, Counter()))

    def reset(self) -> None:
        with self._lock:
            self._since.clear()


def shares(counts: Counter[str], names: Sequence[str]) -> dict[str, float]:
    """Percent of the answers that came from each of ``names``."""
    answered = sum(counts.values())
    return {n: 100.0 * counts[n] / answered if answered else 0.0 for n in names}


class Connection:
    """One HTTP/1.1 connection, kept alive unless ``keep_alive`` is off
    (the legacy client opens a new one per request, as curl in a loop does)."""

    def __init__(self, address: tuple[str, int], keep_alive: bool = True) -> None:
        self.address = address
        self.keep_alive = keep_alive
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self.address, timeout=TIMEOUT)
        try:
            self._conn.request("GET", path, headers={"Host": host})
            response = self._conn.getresponse()
            body = response.read()
        except Exception:
            self.close()
            raise
        headers = {k.lower(): v for k, v in response.getheaders()}
        if not self.keep_alive or headers.get("connection", "").lower() == "close":
            self.close()
        return response.status, headers, body

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def version_outcome(status: int, headers: dict[str, str], body: bytes) -> str:
    if status != 200:
        return f"HTTP {status}"
    return headers.get("x-app-version", "?")


def frontend_outcome(status: int, headers: dict[str, str], body: bytes) -> str:
    """The frontend answers 200 with the backend's JSON, or 502 with its error."""
    if status != 200:
        return f"HTTP {status}"
    try:
        return str(json.loads(body)["backend"]["version"])
    except (ValueError, KeyError, TypeError):
        return "?"


@dataclass
class Client:
    """Sends ``GET path`` at ``rate`` per second, round robin over
    ``addresses``, and tallies each outcome under ``stream``."""

    stream: str
    addresses: Sequence[tuple[str, int]]
    path: str
    rate: float
    tally: Tally
    outcome: Callable[[int, dict[str, str], bytes], str] = version_outcome
    host: str = "weather.example.com"
    keep_alive: bool = True
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Client:
        self._thread = threading.Thread(target=self._run, name=self.stream, daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop sending; with ``wait``, return once the thread has finished
        (at most one request's timeout later)."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(TIMEOUT + 1)

    def _run(self) -> None:
        connections = [Connection(a, self.keep_alive) for a in self.addresses]
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        sent = 0
        try:
            while not self._stop.is_set():
                connection = connections[sent % len(connections)]
                sent += 1
                try:
                    result = self.outcome(*connection.get(self.path, self.host))
                except (OSError, http.client.HTTPException):
                    result = REFUSED
                self.tally.add(self.stream, result)
                # A fixed rate; after a slow answer, carry on from now rather
                # than sending a burst to catch up.
                next_at = max(next_at + interval, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            for connection in connections:
                connection.close()
