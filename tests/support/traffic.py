"""HTTP traffic for end-to-end tests: keep-alive clients and load.

A sidecar's outbound listener is the app's ``HTTP_PROXY``, so requests go to
it as a proxy client sends them: absolute-form (``GET http://host/path``).
A gateway gets origin-form requests with a Host header, as from a browser.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    elapsed: float  # seconds, request sent to body read

    @property
    def version(self) -> str:
        """The weather app's version (``x-app-version``), "" if the app did not answer."""
        return self.headers.get("x-app-version", "")

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection to ``address`` (``HOST:PORT``).

    ``get("http://weather-backend:5000/api/weather")`` sends the absolute form
    (a proxy client); ``get("/api/weather", host="weather.example")`` the origin
    form. A connection the server closed is reopened on the next request, as
    http.client does after ``Connection: close``.
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, _, port = address.rpartition(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def get(self, target: str, host: str = "", headers: Mapping[str, str] | None = None) -> Reply:
        all_headers = dict(headers or {})
        if host:
            all_headers["Host"] = host
        elif "://" in target:
            all_headers["Host"] = urlsplit(target).netloc
        started = time.monotonic()
        try:
            self.connection.request("GET", target, headers=all_headers)
            response = self.connection.getresponse()
            body = response.read()
        except Exception:
            self.connection.close()
            raise
        elapsed = time.monotonic() - started
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            body,
            elapsed,
        )

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(
    address: str,
    target: str,
    count: int,
    host: str = "",
    headers: Mapping[str, str] | None = None,
    concurrency: int = 1,
) -> list[Reply]:
    """``count`` GETs of ``target``, over ``concurrency`` keep-alive connections."""
    replies: list[Reply] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    shares = [
        count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)
    ]

    def worker(share: int) -> None:
        try:
            with Client(address) as client:
                mine = [client.get(target, host, headers) for _ in range(share)]
        except BaseException as exc:
            errors.append(exc)
            return
        with lock:
            replies.extend(mine)

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return replies


def percentages(values: Iterable[str]) -> dict[str, float]:
    """Share of each value, in percent (to 0.01)."""
    counts = Counter(values)
    total = sum(counts.values())
    return {value: round(100.0 * n / total, 2) for value, n in sorted(counts.items())}


@dataclass
class Load:
    """Requests sent in a loop on background threads until :meth:`stop`.

    Every outcome is kept, in order: a :class:`Reply`, or the exception a
    request raised (a reset connection is a failed request too).
    """

    request: Callable[[Client], Reply]
    address: str
    concurrency: int = 2
    results: list[Reply | Exception] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        client = Client(self.address)
        try:
            while not self._stop.is_set():
                outcome: Reply | Exception
                try:
                    outcome = self.request(client)
                except Exception as exc:
                    outcome = exc
                with self._lock:
                    self.results.append(outcome)
        finally:
            client.close()

    def start(self) -> Load:
        for _ in range(self.concurrency):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def since(self, start: int) -> list[Reply | Exception]:
        with self._lock:
            return self.results[start:]

    def stop(self) -> list[Reply | Exception]:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        return self.results

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
