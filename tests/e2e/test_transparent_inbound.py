"""Transparent capture, inbound: real iptables (`sailplane capture`) in pod B,
B's Envoy (uid 1337, INTERCEPTION_MODE REDIRECT from its WorkloadEntry's
annotation) with virtualInbound on 15006, and an app that knows nothing of
the mesh on 0.0.0.0:8080 and on a port no service declares (9999). Pod C is
a plaintext client outside the mesh. Pod A's sidecar calls B over mTLS:
captured too (its app has no proxy settings; virtualOutbound, T-OUT's), or
as its app's HTTP_PROXY; B's inbound side is the same either way.
sailplane serve runs in pod CP.

Root only; every namespace, rule and process goes with the network.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import l4apps, peerecho
from tests.support.meshpods import APP_UID, sailplane, serve, sidecar
from tests.support.netns import Pod, PodNetwork, skip_reason
from tests.support.procs import wait_for
from tests.support.tlsparts import CertAuthority

SKIP = skip_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

PORT = 8080
UNDECLARED = 9999
TCP_PORT = 7070  # declared TCP: the app's HTTP, unseen by the sidecars
TLS_PORT = 8444  # declared TCP: the app's own TLS server
UNDECLARED_TLS = 8443  # the app's own TLS server on a port no service declares
HOST = "backend.default.svc.cluster.local"
PEERECHO = peerecho.__file__
L4APPS = l4apps.__file__

MESH = """\
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports:
  - {{name: http, port: {port}}}
  - {{name: tcp-raw, port: {tcp}}}
  - {{name: tcp-tls, port: {tls}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: b
  annotations: {{sidecar.istio.io/interceptionMode: REDIRECT}}
spec:
  address: {b}
  serviceAccount: backend
  labels: {{app: backend, security.istio.io/tlsMode: istio}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: a
  annotations: {{sidecar.istio.io/statsInclusionPrefixes: cluster.outbound}}
spec: {{address: {a}, serviceAccount: client, labels: {{app: client}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  action: DENY
  # Its port keeps it off the passthrough chains: there, on TCP, a DENY
  # rule's HTTP-only fields are dropped and it would deny all (as Istio).
  rules: [{{to: [{{operation: {{ports: ["{port}"], paths: [/admin]}}}}]}}]
"""

PORT_STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: backend}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  mtls: {{mode: {mode}}}
  portLevelMtls: {{{port}: {{mode: {port_mode}}}}}
"""

STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"""


def get(net: PodNetwork, pod: Pod, url: str, proxy: str = "", host: str = "") -> dict[str, Any]:
    """One GET from ``pod`` as an app user: {"status", "body"} or {"error"}."""
    argv = [sys.executable, "-I", PEERECHO, "get", url, proxy, host]
    done = net.run(pod, argv, uid=APP_UID, timeout=10)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    if str(result.get("body", "")).startswith("{"):
        result["body"] = json.loads(result["body"])
    return result


class Scene:
    def __init__(self, net: PodNetwork, work: Path, client: str) -> None:
        self.net, self.work, self.client = net, work, client
        self.config = work / "mesh"
        self.cp, self.a, self.b, self.c = net["cp"], net["a"], net["b"], net["c"]

    def start(self) -> None:
        self.config.mkdir()
        (self.config / "mesh.yaml").write_text(
            MESH.format(port=PORT, tcp=TCP_PORT, tls=TLS_PORT, a=self.a.ip, b=self.b.ip)
        )
        ca = self.work / "ca"
        serve(self.net, self.cp, self.config, ca)
        ready = f"http://{self.cp.ip}:15014/ready"
        wait_for(lambda: get(self.net, self.cp, ready).get("status") == 200, what="sailplane ready")
        # B: the app, knowing nothing of the mesh, then capture, then its sidecar.
        app = self.net.spawn(
            self.b,
            [sys.executable, "-I", PEERECHO, "serve", str(PORT), str(UNDECLARED), str(TCP_PORT)],
        )
        assert app.stdout is not None and app.stdout.readline() == "ready\n"
        sailplane(self.net, self.b, "capture")
        # B: transparent, from its annotation; A: as the test asks.
        sidecar(self.net, self.b, "b", self.cp, self.config, ca, self.work)
        if self.client == "transparent":
            sailplane(self.net, self.a, "capture")
        sidecar(
            self.net, self.a, "a", self.cp, self.config, ca, self.work, "--capture", self.client
        )

    def admin(self, pod: Pod, path: str) -> str:
        code = (
            "import urllib.request,sys;"
            f"print(urllib.request.urlopen('http://127.0.0.1:15000{path}',timeout=3).read().decode())"
        )
        done = self.net.run(pod, [sys.executable, "-I", "-c", code])
        return done.stdout if done.returncode == 0 else ""

    def stat(self, pod: Pod, name: str) -> int:
        query = urllib.parse.quote(f"^{re.escape(name)}$")
        for line in self.admin(pod, f"/stats?filter={query}").splitlines():
            key, _, value = line.rpartition(": ")
            if key == name:
                return int(value)
        return 0

    def from_a(self, path: str) -> dict[str, Any]:
        if self.client == "transparent":
            # No proxy settings: B's address, as DNS would give it, and the name.
            return get(self.net, self.a, f"http://{self.b.ip}:{PORT}{path}", "", f"{HOST}:{PORT}")
        return get(self.net, self.a, f"http://{HOST}:{PORT}{path}", "127.0.0.1:15001")

    def from_c(self, path: str, port: int = PORT) -> dict[str, Any]:
        return get(self.net, self.c, f"http://{self.b.ip}:{port}{path}")


@pytest.fixture(params=["transparent", "proxy"])
def scene(request: pytest.FixtureRequest) -> Iterator[Scene]:
    """A's sidecar captures its app's traffic (T-OUT's virtualOutbound), or
    is its HTTP_PROXY: B's inbound side is the same either way."""
    work = Path(tempfile.mkdtemp(prefix="sailplane-transparent-"))
    work.chmod(0o755)  # Envoy runs as the proxy uid
    try:
        with PodNetwork(["cp", "a", "b", "c"]) as net:
            yield Scene(net, work, request.param)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_virtual_inbound_permissive_then_strict(scene: Scene) -> None:
    scene.start()
    # PERMISSIVE: a plaintext client outside the mesh reaches the app through
    # virtualInbound; the app sees the sidecar's 127.0.0.6 as its peer.
    first = wait_for(
        lambda: (r := scene.from_c("/")).get("status") == 200 and r, what="C -> B (plain)"
    )
    assert first["body"] == {"peer": "127.0.0.6", "port": PORT, "path": "/", "xfcc": ""}
    assert scene.stat(scene.b, "listener.0.0.0.0_15006.downstream_cx_total") >= 1
    # The captured caller with a sidecar: mTLS, its identity forwarded.
    mtls = wait_for(
        lambda: (r := scene.from_a("/")).get("status") == 200 and r, what="A -> B (mTLS)"
    )
    assert "spiffe://cluster.local/ns/default/sa/client" in mtls["body"]["xfcc"]
    assert mtls["body"]["peer"] == "127.0.0.6"
    # The DENY policy applies to captured traffic, plaintext and mTLS alike.
    assert scene.from_c("/admin")["status"] == 403
    assert scene.from_a("/admin")["status"] == 403
    # A port no service declares passes through to the app (PERMISSIVE).
    undeclared = scene.from_c("/", UNDECLARED)
    assert undeclared.get("status") == 200, undeclared
    assert undeclared["body"]["peer"] == "127.0.0.6"
    assert undeclared["body"]["port"] == UNDECLARED

    # 15006 itself as a destination would pass through to itself forever:
    # Istio's virtualInbound-blackhole chain closes it at once.
    assert "error" in scene.from_c("/", 15006)
    assert scene.stat(scene.b, "tcp.BlackHoleCluster.downstream_cx_total") == 1

    # STRICT (the watched YAML edited): plaintext is refused on the service
    # port and on the undeclared one; the sidecar's mTLS goes on.
    (scene.config / "strict.yaml").write_text(STRICT)
    refused = wait_for(
        lambda: (r := scene.from_c("/")).get("error") and r, what="C refused under STRICT"
    )
    assert "status" not in refused
    assert "error" in scene.from_c("/", UNDECLARED)
    still = scene.from_a("/")
    assert still.get("status") == 200, still
    assert "spiffe://cluster.local/ns/default/sa/client" in still["body"]["xfcc"]
    assert scene.from_a("/admin")["status"] == 403


def _c_line(scene: Scene, port: int) -> dict[str, int]:
    """C (outside the mesh) opens one-way TLS to B's app on ``port``."""
    argv = [sys.executable, "-I", L4APPS, "tcp", scene.b.ip, str(port), "1", "backend.test"]
    done = scene.net.run(scene.c, argv, uid=APP_UID, timeout=30)
    assert done.returncode == 0, done.stderr
    seen: dict[str, int] = json.loads(done.stdout)
    return seen


@pytest.mark.parametrize("scene", ["transparent"], indirect=True)
def test_permissive_tells_mesh_mtls_from_plain_tls_by_alpn(scene: Scene) -> None:
    """PERMISSIVE on a TCP port and on a passthrough port: a mesh client's
    mTLS (Istio's ALPNs, offered by A's cluster) is terminated by B's
    sidecar; an outside client's own one-way TLS reaches the app's TLS
    server untouched (Istio's plain-TLS chain)."""
    issued = CertAuthority().issue("backend.test")
    cert, key = scene.work / "tls.crt", scene.work / "tls.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    specs = [f"tls:{p}:{cert}:{key}" for p in (TLS_PORT, UNDECLARED_TLS)]
    tls_app = scene.net.spawn(scene.b, [sys.executable, "-I", L4APPS, "serve", "b-tls", *specs])
    assert tls_app.stdout is not None and tls_app.stdout.readline() == "ready\n"
    scene.start()
    wait_for(lambda: scene.from_c("/").get("status") == 200, what="C -> B (plain)")
    assert _c_line(scene, UNDECLARED_TLS) == {"b-tls": 1}
    assert _c_line(scene, TLS_PORT) == {"b-tls": 1}
    # A's app dials B's TCP port; A's sidecar originates mTLS: terminated
    # by B's (a plain-TLS pass-through would hand the app TLS bytes).
    url = f"http://{scene.b.ip}:{TCP_PORT}/"
    mtls = wait_for(
        lambda: (r := get(scene.net, scene.a, url)).get("status") == 200 and r, what="A -> B"
    )
    assert mtls["body"]["peer"] == "127.0.0.6" and mtls["body"]["port"] == TCP_PORT
    handshakes = f"cluster.outbound|{TCP_PORT}||{HOST}.ssl.handshake"
    assert scene.stat(scene.a, handshakes) >= 1


@pytest.mark.parametrize("scene", ["proxy"], indirect=True)
def test_port_level_mtls_on_a_port_no_service_declares(scene: Scene) -> None:
    """portLevelMtls on the undeclared port gets passthrough chains of its
    own (Istio's needPerPortPassthroughFilterChain): STRICT there refuses
    plaintext while the rest is PERMISSIVE; DISABLE there lets it in while
    the rest is STRICT."""
    scene.start()
    wait_for(lambda: scene.from_c("/", UNDECLARED).get("status") == 200, what="C -> B:9999")
    policy = scene.config / "port-level.yaml"
    policy.write_text(PORT_STRICT.format(mode="PERMISSIVE", port=UNDECLARED, port_mode="STRICT"))
    wait_for(lambda: "error" in scene.from_c("/", UNDECLARED), what="C refused on 9999")
    assert scene.from_c("/").get("status") == 200
    assert scene.from_a("/").get("status") == 200

    policy.write_text(PORT_STRICT.format(mode="STRICT", port=UNDECLARED, port_mode="DISABLE"))
    wait_for(lambda: "error" in scene.from_c("/"), what="C refused on 8080")
    undeclared = scene.from_c("/", UNDECLARED)
    assert undeclared.get("status") == 200, undeclared
    assert undeclared["body"]["port"] == UNDECLARED
    assert scene.from_a("/").get("status") == 200


SNIFF_ECHO, SNIFF_BANNER, SNIFF_HTTP = 7071, 7072, 7073  # ports of unknown protocol

SNIFFED = """\
apiVersion: v1
kind: Service
metadata: {{name: sniffed}}
spec:
  selector: {{app: backend}}
  ports: [{{port: {echo}}}, {{name: banner, port: {banner}}}, {{name: web, port: {http}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: sniffed}}
spec:
  hosts: [sniffed]
  http:
  - match: [{{port: {http}}}]
    rewrite: {{uri: /rewritten/}}
    route: [{{destination: {{host: sniffed, port: {{number: {http}}}}}}}]
"""


@pytest.mark.parametrize("scene", ["transparent"], indirect=True)
def test_ports_of_unknown_protocol_are_sniffed(scene: Scene) -> None:
    """Ports no name or appProtocol types (Istio's sniffing): a raw TCP
    echo and a server-first banner reach B's apps from A's captured app
    through both sidecars (A: TCP after http_inspector; B: mTLS with
    Istio's TCP ALPNs, its TCP chain), and HTTP on another such port is
    still routed by Host (the VirtualService's rewrite applies) and
    reaches B's HTTP chain (A's identity in XFCC: istio-http ALPN)."""
    specs = [f"echo:{SNIFF_ECHO}", f"tcp:{SNIFF_BANNER}"]
    apps = scene.net.spawn(scene.b, [sys.executable, "-I", L4APPS, "serve", "b-l4", *specs])
    assert apps.stdout is not None and apps.stdout.readline() == "ready\n"
    web = scene.net.spawn(scene.b, [sys.executable, "-I", PEERECHO, "serve", str(SNIFF_HTTP)])
    assert web.stdout is not None and web.stdout.readline() == "ready\n"
    scene.start()
    (scene.config / "sniffed.yaml").write_text(
        SNIFFED.format(echo=SNIFF_ECHO, banner=SNIFF_BANNER, http=SNIFF_HTTP)
    )
    host = f"sniffed.default.svc.cluster.local:{SNIFF_HTTP}"
    url = f"http://{scene.b.ip}:{SNIFF_HTTP}/path"

    def via_a() -> dict[str, Any]:
        return get(scene.net, scene.a, url, "", host)

    http = wait_for(
        lambda: (
            (r := via_a()).get("status") == 200 and r["body"]["path"] == "/rewritten/path" and r
        ),
        what="A -> B sniffed HTTP, rewritten",
    )
    assert "spiffe://cluster.local/ns/default/sa/client" in http["body"]["xfcc"]

    def l4(kind: str, pod: Pod, port: int) -> dict[str, int]:
        argv = [sys.executable, "-I", L4APPS, kind, scene.b.ip, str(port), "2"]
        done = scene.net.run(pod, argv, uid=APP_UID, timeout=60)
        assert done.returncode == 0, done.stderr
        seen: dict[str, int] = json.loads(done.stdout)
        return seen

    assert l4("echo", scene.a, SNIFF_ECHO) == {"b-l4:ping": 2}
    assert l4("tcp", scene.a, SNIFF_BANNER) == {"b-l4": 2}  # after A's sniffing timeout
    mtls = f"cluster.outbound|{SNIFF_ECHO}||sniffed.default.svc.cluster.local.ssl.handshake"
    assert scene.stat(scene.a, mtls) >= 2
    # C, plaintext from outside the mesh (PERMISSIVE): B sniffs it too.
    assert l4("echo", scene.c, SNIFF_ECHO) == {"b-l4:ping": 2}
    plain = get(scene.net, scene.c, f"http://{scene.b.ip}:{SNIFF_HTTP}/p")
    assert plain.get("status") == 200 and plain["body"]["path"] == "/p", plain
