"""An HTTP app that tells each caller who it saw, and the client that asks;
stdlib only, so any uid can run it inside a pod (tests/support/netns.py).

    peerecho.py serve PORT [PORT...]     listen on 0.0.0.0:PORT (no proxy, no
                                         mesh settings); print "ready"; answer
                                         every GET with JSON {"peer", "port",
                                         "path", "xfcc"}
    peerecho.py get URL [PROXY [HOST]]   one GET, through the HTTP proxy
                                         PROXY (host:port) when not "", else
                                         directly (HTTP_PROXY is ignored),
                                         with Host: HOST when given; print
                                         JSON {"status", "body"} or {"error"}
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import threading
import urllib.parse


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "peer": self.client_address[0],
                "port": self.connection.getsockname()[1],
                "path": self.path,
                "xfcc": self.headers.get("x-forwarded-client-cert", ""),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(ports: list[int]) -> None:
    servers = [http.server.ThreadingHTTPServer(("0.0.0.0", p), _Echo) for p in ports]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    servers[0].serve_forever()


def get(url: str, proxy: str = "", host_header: str = "") -> dict[str, object]:
    parts = urllib.parse.urlsplit(url)
    host, port = proxy.rsplit(":", 1) if proxy else (parts.hostname, parts.port or 80)
    target = url if proxy else (parts.path or "/")
    conn = http.client.HTTPConnection(str(host), int(port), timeout=3)
    try:
        conn.request("GET", target, headers={"host": host_header or parts.netloc})
        response = conn.getresponse()
        return {"status": response.status, "body": response.read().decode(errors="replace")}
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, closed, timed out
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    else:
        print(json.dumps(get(*sys.argv[2:5])))
