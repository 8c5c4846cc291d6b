"""Apps that say who they are, over HTTP, plain TCP and TLS, and clients that
count the answers; stdlib only, so any uid can run them inside a pod
(tests/support/netns.py) with no proxy settings.

    l4apps.py serve NAME [http:PORT] [tcp:PORT] [tls:PORT:CERT:KEY] [echo:PORT]...
        print "ready", then answer: HTTP GET with the body NAME, TCP and TLS
        connections (after the handshake) with the line NAME, then close
        (the server speaks first); echo connections read a line LINE first
        and answer NAME:LINE (the client speaks first, not HTTP)
    l4apps.py http HOST PORT HOSTHEADER COUNT
        COUNT GETs on one kept-alive connection, Host: HOSTHEADER
    l4apps.py tcp HOST PORT COUNT [SNI]
        COUNT connections (TLS with server_hostname SNI when given), each
        reading one line
    l4apps.py echo HOST PORT COUNT
        COUNT connections, each sending the line "ping" and reading one line

The clients print JSON: answer -> how many times ("error:..." for failures).
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import socketserver
import ssl
import sys
import threading
from collections import Counter


def _serve(name: str, specs: list[str]) -> None:
    class Http(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline().decode().strip()
            self.wfile.write(f"{name}:{line}\n".encode())

    class Line(socketserver.BaseRequestHandler):
        context: ssl.SSLContext | None = None

        def handle(self) -> None:
            sock = self.request
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_side=True)
            sock.sendall(f"{name}\n".encode())
            sock.close()

    servers: list[socketserver.TCPServer] = []
    for spec in specs:
        kind, port, *files = spec.split(":")
        if kind == "http":
            servers.append(http.server.ThreadingHTTPServer(("0.0.0.0", int(port)), Http))
            continue
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        if kind == "echo":
            servers.append(socketserver.ThreadingTCPServer(("0.0.0.0", int(port)), Echo))
            continue
        handler: type[Line] = Line
        if kind == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(files[0], files[1])
            handler = type("Tls", (Line,), {"context": context})
        servers.append(socketserver.ThreadingTCPServer(("0.0.0.0", int(port)), handler))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _http(host: str, port: int, authority: str, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    conn = http.client.HTTPConnection(host, port, timeout=5)
    for _ in range(count):
        try:
            conn.request("GET", "/", headers={"Host": authority})
            response = conn.getresponse()
            body = response.read().decode()
            seen[body if response.status == 200 else f"status:{response.status}"] += 1
        except (OSError, http.client.HTTPException) as exc:
            seen[f"error:{type(exc).__name__}"] += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
    return seen


def _line(host: str, port: int, sni: str, send: bytes = b"") -> str:
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            sock: socket.socket = raw
            if send:
                sock.sendall(send)
            if sni:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw, server_hostname=sni)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(100)
                if not chunk:
                    break
                data += chunk
            return data.decode().strip() or "error:closed"
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "serve":
        _serve(rest[0], rest[1:])
        return
    if command == "http":
        seen = _http(rest[0], int(rest[1]), rest[2], int(rest[3]))
    elif command == "echo":
        seen = Counter(_line(rest[0], int(rest[1]), "", b"ping\n") for _ in range(int(rest[2])))
    else:
        sni = rest[3] if len(rest) > 3 else ""
        seen = Counter(_line(rest[0], int(rest[1]), sni) for _ in range(int(rest[2])))
    print(json.dumps(dict(seen)))


if __name__ == "__main__":
    main(sys.argv[1:])
