"""The monitor port (15014): readiness, debug endpoints, metrics.

A deliberately small HTTP/1.1 server on asyncio streams: GET, plus POST for
dry runs (``sailplane diff`` sends a directory's files; nothing is applied),
one request per connection, JSON or text bodies. It serves operators and
``sailplane status``; it is not on any data path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("sailplane.monitor")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (``Allow`` on a 405)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())

    @classmethod
    def text(
        cls, value: str, status: int = 200, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        return cls(status, value.encode(), content_type)


Handler = Callable[[dict[str, list[str]]], Response | Awaitable[Response]]
PostHandler = Callable[[dict[str, list[str]], bytes], Response | Awaitable[Response]]

MAX_BODY = 64 * 1024 * 1024  # a dry run carries a whole config directory

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    503: "Service Unavailable",
    500: "Internal Server Error",
}


class MonitorServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.post_routes: dict[str, PostHandler] = {}
        self._server: asyncio.Server | None = None

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def post_route(self, path: str, handler: PostHandler) -> None:
        self.post_routes[path] = handler

    def endpoints(self) -> list[str]:
        """Every endpoint, for the startup log: GET paths, then ``POST PATH``."""
        return [*self.routes, *(f"POST {path}" for path in self.post_routes)]

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, sep, value in (line.partition(":") for line in header_lines)
                if sep
            }
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                response = Response.text("request body too large\n", 413)
            else:
                body = await asyncio.wait_for(reader.readexactly(length), 30) if length else b""
                response = await self._dispatch(method, target, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            response = Response.text("bad request\n", 400)
        except Exception:  # a debug page must never take the server down
            log.exception("monitor handler failed")
            response = Response.text("internal error\n", 500)
        reason = _REASONS.get(response.status, "OK")
        writer.write(
            (
                f"HTTP/1.1 {response.status} {reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in response.headers)
                + "Connection: close\r\n\r\n"
            ).encode()
            + response.body
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    async def _dispatch(self, method: str, target: str, body: bytes = b"") -> Response:
        url = urlsplit(target)
        result: Response | Awaitable[Response]
        if method == "POST" and url.path in self.post_routes:
            result = self.post_routes[url.path](parse_qs(url.query), body)
        elif url.path in self.post_routes and url.path not in self.routes:
            return Response(
                405,
                f"{url.path} takes POST only (a dry run: POST a JSON body "
                '{"files": {"NAME": "TEXT"}}; `sailplane diff` does)\n'.encode(),
                "text/plain; charset=utf-8",
                (("Allow", "POST"),),
            )
        elif method not in ("GET", "HEAD"):
            allow = "GET, HEAD, POST" if url.path in self.post_routes else "GET, HEAD"
            return Response(
                405,
                f"{url.path} takes {allow} only\n".encode(),
                "text/plain; charset=utf-8",
                (("Allow", allow),),
            )
        elif url.path not in self.routes:
            paths = "\n".join(sorted({*self.routes, *self.post_routes}))
            return Response.text(f"not found; try one of:\n{paths}\n", 404)
        else:
            result = self.routes[url.path](parse_qs(url.query))
        if isinstance(result, Response):
            return result
        return await result
