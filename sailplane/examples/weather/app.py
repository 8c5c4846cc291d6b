#!/usr/bin/env python3
"""The weather mesh's apps, standard library only, one file.

    app.py backend  --version single   --listen 0.0.0.0:5000
    app.py frontend --backend http://weather-backend:5000 --listen 0.0.0.0:5000
    app.py client   --backend http://weather-backend:5000 --interval 1
    app.py stations --version v1 --listen 0.0.0.0:7000
    app.py pause

The backend answers ``GET /api/weather`` (one day for version ``single``,
several for ``multiple``) plus a few endpoints tests use: ``/headers``
(echoes request headers), ``/status/CODE``, ``/delay/MS`` and
``/flaky/KEY/N`` (fails the first N calls for KEY with 503). With
``--fail-path-prefix /api`` an instance answers 500 for every path under
``/api``: a broken replica, for outlier detection.

With ``--reuse-port`` (``APP_REUSE_PORT=1``) the listening socket sets
SO_REUSEPORT: in a container whose sidecar binds ``0.0.0.0:5000``, the app
can then listen on ``127.0.0.1:5000`` behind it (Linux allows the two only
when both set it, under one uid, and gives each connection to the most
specific address). Off by default, so that a port already in use fails loudly.

The frontend answers ``GET /`` by calling the backend through its sidecar:
it honours ``HTTP_PROXY`` like any HTTP client and forwards tracing headers
so one user request is one trace.

The client is the legacy client, outside the mesh: once per ``--interval``
seconds (``APP_INTERVAL``, default 1) it calls the backend's
``/api/weather`` directly, never through a proxy (``HTTP_PROXY`` is
ignored), with a 2 s timeout, and prints one line per call::

    legacy-client -> weather-backend: HTTP 200
    legacy-client -> weather-backend: refused (connection reset)

(the left part is ``--name``/``--instance``, the right the backend's host).

The stations role is weather-stations, a plain TCP service (no HTTP),
line by line on one connection: the client sends a station's name, the
server answers one JSON line with its reading, ``service``, ``version`` and
``instance``, and closes the connection when the client does::

    zurich
    {"service": "weather-stations", "version": "v1", "instance": ..., "station": "zurich", ...}

The reading depends only on the name; version ``v1`` reports the
temperature, ``v2`` the wind as well (so the versions answer differently,
as the backend's do).

The pause role holds a network namespace for the containers of one
workload, as Kubernetes' pause container holds a pod's: it prints one line
and sleeps in the kernel until SIGTERM or SIGINT.

Every role exits 0 on SIGTERM as on SIGINT, also as PID 1 in a container,
where the kernel gives SIGTERM no default action (without a handler,
``docker stop`` waits 10 s and then kills).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import urlsplit

TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
)
FORECASTS = ["sunny", "cloudy", "rain", "wind", "snow"]
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
CLIENT_TIMEOUT = 2.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: otherwise keep-alive clients wait
    # ~40 ms per request on delayed ACKs.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: AppServer

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("APP_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-app-version", self.server.version)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.do_GET()

    def do_GET(self) -> None:
        if self.server.role == "frontend":
            self._frontend()
        else:
            self._backend()

    def _backend(self) -> None:
        srv = self.server
        path = self.path.split("?", 1)[0]
        base = {"service": srv.service, "version": srv.version, "instance": srv.instance}
        if srv.fail_path_prefix and path.startswith(srv.fail_path_prefix):
            self._send(500, {**base, "error": "failing on purpose (--fail-path-prefix)"})
        elif path == "/api/weather":
            days = 1 if srv.version == "single" else 3
            self._send(200, {**base, "forecast": FORECASTS[:days]})
        elif path == "/headers":
            self._send(200, {**base, "headers": {k.lower(): v for k, v in self.headers.items()}})
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), base)
        elif path.startswith("/delay/"):
            time.sleep(int(path.rsplit("/", 1)[1]) / 1000)
            self._send(200, base)
        elif path.startswith("/flaky/"):
            _, _, key, failures = path.split("/", 3)
            with srv.lock:
                seen = srv.counts[key] = srv.counts.get(key, 0) + 1
            self._send(503 if seen <= int(failures) else 200, {**base, "attempt": seen})
        else:
            self._send(200, {**base, "path": self.path})

    def _frontend(self) -> None:
        srv = self.server
        headers = {h: self.headers[h] for h in TRACE_HEADERS if self.headers.get(h)}
        url = srv.backend.rstrip("/") + "/api/weather"
        request = urllib.request.Request(url, headers=headers)
        try:
            with srv.opener.open(request, timeout=10) as response:
                backend = json.load(response)
                status = 200
        except urllib.error.HTTPError as exc:
            backend, status = {"error": exc.code}, 502
        except (urllib.error.URLError, OSError) as exc:
            backend, status = {"error": str(exc)}, 502
        self._send(status, {"service": srv.service, "backend": backend})


class AppServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], args: argparse.Namespace) -> None:
        self.allow_reuse_port = bool(args.reuse_port)
        super().__init__(address, Handler)
        self.role = args.role
        self.version = args.version
        self.service = args.service or f"weather-{args.role}"
        self.instance = args.instance or f"{address[0]}:{address[1]}"
        self.backend = args.backend
        self.fail_path_prefix = args.fail_path_prefix
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        # urllib reads HTTP_PROXY / NO_PROXY from the environment, like curl.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler())


class StationsHandler(socketserver.StreamRequestHandler):
    """One connection of the stations role: a line in, a JSON line out, until EOF."""

    server: StationsServer

    def handle(self) -> None:
        srv = self.server
        for raw in self.rfile:
            station = raw.decode("utf-8", "replace").strip()
            if not station:
                continue
            seed = zlib.crc32(station.encode())
            reading: dict[str, object] = {"temperature_c": round(seed % 400 / 10 - 10, 1)}
            if srv.version != "v1":
                reading["wind_kmh"] = seed // 400 % 80
            answer = {
                "service": srv.service,
                "version": srv.version,
                "instance": srv.instance,
                "station": station,
                "reading": reading,
            }
            self.wfile.write((json.dumps(answer) + "\n").encode())
            self.wfile.flush()


class StationsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], args: argparse.Namespace) -> None:
        self.allow_reuse_port = bool(args.reuse_port)
        super().__init__(address, StationsHandler)
        self.version = args.version
        self.service = args.service or "weather-stations"
        self.instance = args.instance or f"{address[0]}:{address[1]}"


def interrupt_on_sigterm() -> None:
    """SIGTERM stops the app as Ctrl-C does: KeyboardInterrupt in the main thread."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def short_reason(exc: BaseException) -> str:
    """Why a call failed, in a few words (curl's exit codes say less)."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError too
        return "closed without a response"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def call_once(opener: urllib.request.OpenerDirector, url: str) -> str:
    try:
        with opener.open(url, timeout=CLIENT_TIMEOUT) as response:
            response.read()
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        return f"refused ({short_reason(exc)})"


def run_client(args: argparse.Namespace) -> None:
    """The legacy client: outside the mesh, so no proxy whatever HTTP_PROXY says."""
    url = args.backend.rstrip("/") + "/api/weather"
    label = f"{args.instance or 'legacy-client'} -> {urlsplit(args.backend).hostname}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    print(f"weather client calling {url} every {args.interval:g}s", flush=True)
    next_call = time.monotonic()
    while True:
        print(f"{label}: {call_once(opener, url)}", flush=True)
        next_call = max(next_call + args.interval, time.monotonic())
        time.sleep(max(next_call - time.monotonic(), 0.0))


def run_pause() -> None:
    """Hold the network namespace: blocked signals wait in the kernel for
    sigwait (no CPU, and none lost between the print and the wait)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    print("weather pause: holding the network namespace until SIGTERM", flush=True)
    signal.sigwait(STOP_SIGNALS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "role",
        choices=["frontend", "backend", "stations", "client", "pause"],
        default=os.environ.get("APP_ROLE"),
        nargs="?",
    )
    parser.add_argument("--listen", default=os.environ.get("APP_LISTEN", "0.0.0.0:5000"))
    parser.add_argument("--version", default=os.environ.get("APP_VERSION", "v1"))
    parser.add_argument("--service", default=os.environ.get("APP_SERVICE"))
    parser.add_argument("--instance", "--name", default=os.environ.get("APP_INSTANCE"))
    parser.add_argument(
        "--backend", default=os.environ.get("APP_BACKEND", "http://weather-backend:5000")
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("APP_INTERVAL", "1")),
        help="seconds between the client's calls (default 1)",
    )
    parser.add_argument(
        "--fail-path-prefix",
        default=os.environ.get("APP_FAIL_PATH_PREFIX", ""),
        help="answer 500 for paths starting with this (a broken replica)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=os.environ.get("APP_REUSE_PORT", "") not in ("", "0"),
        help="set SO_REUSEPORT, to listen on 127.0.0.1 behind a sidecar bound to 0.0.0.0",
    )
    args = parser.parse_args(argv)
    if args.role is None:
        parser.error("give the role (frontend, backend, stations, client or pause) or set APP_ROLE")
    if args.role == "pause":
        run_pause()
        return 0
    interrupt_on_sigterm()
    if args.role == "client":
        with contextlib.suppress(KeyboardInterrupt):
            run_client(args)
        return 0
    host, _, port = args.listen.rpartition(":")
    server: socketserver.TCPServer
    if args.role == "stations":
        server = StationsServer((host, int(port)), args)
    else:
        server = AppServer((host, int(port)), args)
    print(f"weather {args.role} {args.version} on {args.listen}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
