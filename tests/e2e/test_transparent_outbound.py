"""Transparent capture, outbound: real iptables (`sailplane capture`) in pod
A, A's Envoy (uid 1337, INTERCEPTION_MODE REDIRECT) with virtualOutbound on
15001 and a listener per service port, and an app with no proxy settings
that dials addresses as DNS would give them. B1 and B2 are the backend's
two versions (no sidecars: plaintext HTTP, TCP and TLS apps that say who
they are); C is a server outside the mesh; sailplane serve runs in CP.

Root only; every namespace, rule and process goes with the network.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import l4apps
from tests.support.meshpods import APP_UID, PROXY_UID, sailplane, serve, sidecar
from tests.support.netns import Pod, PodNetwork, skip_reason
from tests.support.procs import wait_for
from tests.support.tlsparts import CertAuthority

SKIP = skip_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

HTTP, TCP, TLS, OUTSIDE = 8080, 9000, 443, 7777
L4APPS = l4apps.__file__

MESH = """\
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: {http}}}, {{name: tcp-echo, port: {tcp}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: b1}}
spec: {{address: {b1}, labels: {{app: backend, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: b2}}
spec: {{address: {b2}, labels: {{app: backend, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: a}}
spec: {{address: {a}, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend}}
spec:
  host: backend
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend}}
spec:
  hosts: [backend]
  http:
  - route:
    - {{destination: {{host: backend, subset: v1}}, weight: 90}}
    - {{destination: {{host: backend, subset: v2}}, weight: 10}}
  tcp:
  - match: [{{port: {tcp}}}]
    route:
    - {{destination: {{host: backend, subset: v1, port: {{number: {tcp}}}}}, weight: 70}}
    - {{destination: {{host: backend, subset: v2, port: {{number: {tcp}}}}}, weight: 30}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: one}}
spec:
  hosts: [one.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: {b1}, ports: {{tls: 8443}}}}]
  ports: [{{number: {tls}, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: two}}
spec:
  hosts: [two.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: {b2}, ports: {{tls: 8443}}}}]
  ports: [{{number: {tls}, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [secure.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {tls}, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [secure.example.test]
  tls:
  - match: [{{port: {tls}, sniHosts: [secure.example.test]}}]
    route: [{{destination: {{host: two.example.test, port: {{number: {tls}}}}}}}]
"""

# A wildcard host the app may tunnel to with CONNECT (connect.py); nothing
# resolves *.wild.test here, so a tunnel to the CONNECT authority fails (503).
WILD = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.wild.test"]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild}
spec:
  hosts: ["*.wild.test"]
  tls:
  - match: [{port: 443, sniHosts: ["*.wild.test"]}]
    route: [{destination: {host: "*.wild.test"}}]
"""

# CONNECT AUTHORITY over a connection to HOST:PORT, then a GET in the
# tunnel: prints the CONNECT's status and whatever came back.
CONNECT = """\
import socket, sys
host, port, authority = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(f"CONNECT {authority} HTTP/1.1\\r\\nHost: {authority}\\r\\n\\r\\n".encode())
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: c\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except OSError:
        pass
print(data.decode(errors="replace"))
"""

REGISTRY_ONLY = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


class Scene:
    def __init__(self, net: PodNetwork, work: Path) -> None:
        self.net, self.work = net, work
        self.config = work / "mesh"
        self.cp, self.a, self.c = net["cp"], net["a"], net["c"]
        self.b1, self.b2 = net["b1"], net["b2"]

    def app(self, pod: Pod, name: str, *specs: str) -> None:
        process = self.net.spawn(pod, [sys.executable, "-I", L4APPS, "serve", name, *specs])
        assert process.stdout is not None and process.stdout.readline() == "ready\n"

    def start(self) -> None:
        self.config.mkdir()
        (self.config / "mesh.yaml").write_text(
            MESH.format(http=HTTP, tcp=TCP, tls=TLS, a=self.a.ip, b1=self.b1.ip, b2=self.b2.ip)
        )
        (self.config / "wild.yaml").write_text(WILD)
        issued = CertAuthority().issue("*.example.test")
        cert, key = self.work / "tls.crt", self.work / "tls.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        tls = f"tls:8443:{cert}:{key}"
        for pod, name in ((self.b1, "b1"), (self.b2, "b2")):
            self.app(pod, name, f"http:{HTTP}", f"tcp:{TCP}", tls)
        self.app(self.c, "c", f"http:{HTTP}", f"tcp:{OUTSIDE}", f"tls:{TLS}:{cert}:{key}")
        ca = self.work / "ca"
        serve(self.net, self.cp, self.config, ca)
        wait_for(
            lambda: (
                "status:404" in self.http(self.cp, self.cp.ip, 15014, "x", 1, uid=None)
                or "status:200" in self.http(self.cp, self.cp.ip, 15014, "x", 1, uid=None)
            ),
            what="sailplane up",
        )
        # A: capture first, then its sidecar (the proxy uid is not captured).
        sailplane(self.net, self.a, "capture")
        sidecar(
            self.net, self.a, "a", self.cp, self.config, ca, self.work, "--capture", "transparent"
        )

    def _client(self, pod: Pod, argv: list[str], uid: int | None) -> dict[str, int]:
        done = self.net.run(pod, [sys.executable, "-I", L4APPS, *argv], uid=uid, timeout=60)
        assert done.returncode == 0, done.stderr
        seen: dict[str, int] = json.loads(done.stdout)
        return seen

    def http(
        self, pod: Pod, ip: str, port: int, host: str, count: int, uid: int | None = APP_UID
    ) -> dict[str, int]:
        return self._client(pod, ["http", ip, str(port), host, str(count)], uid)

    def connect(self, ip: str, port: int, authority: str) -> str:
        """The app's CONNECT, sent to ip:port: what came back."""
        argv = [sys.executable, "-I", "-c", CONNECT, ip, str(port), authority]
        done = self.net.run(self.a, argv, uid=APP_UID, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def tcp(
        self, ip: str, port: int, count: int = 1, sni: str = "", uid: int = APP_UID
    ) -> dict[str, int]:
        argv = ["tcp", ip, str(port), str(count), *([sni] if sni else [])]
        return self._client(self.a, argv, uid)


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    work = Path(tempfile.mkdtemp(prefix="sailplane-transparent-out-"))
    work.chmod(0o755)  # Envoy and the apps run as other users
    try:
        with PodNetwork(["cp", "a", "b1", "b2", "c"]) as net:
            scene = Scene(net, work)
            scene.start()
            # Ready when A's sidecar routes the backend by name.
            wait_for(
                lambda: (
                    set(scene.http(scene.a, scene.b1.ip, HTTP, f"backend:{HTTP}", 20))
                    == {"b1", "b2"}
                ),
                what="A's sidecar routing the backend",
            )
            yield scene
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _within_5_sigma(hits: int, total: int, share: float) -> bool:
    return abs(hits - total * share) <= 5 * math.sqrt(total * share * (1 - share))


def test_http_by_name_holds_the_90_10_split(scene: Scene) -> None:
    """The app dials b1's address (what DNS would give) and names the
    service in Host: the sidecar routes by name, not by the address."""
    seen = scene.http(scene.a, scene.b1.ip, HTTP, f"backend:{HTTP}", 400)
    assert set(seen) == {"b1", "b2"}, seen
    assert _within_5_sigma(seen["b2"], 400, 0.1), seen


def test_tcp_route_splits_70_30_by_connection(scene: Scene) -> None:
    seen = scene.tcp(scene.b1.ip, TCP, 200)
    assert set(seen) == {"b1", "b2"}, seen
    assert _within_5_sigma(seen["b2"], 200, 0.3), seen


def test_tls_route_by_sni(scene: Scene) -> None:
    """Dialled at C's address, the SNI decides: the tls route sends
    secure.example.test to two's instance (B2), one.example.test goes to
    its own (B1); an SNI no service names goes where it was dialled (C)."""
    c = scene.c.ip
    assert scene.tcp(c, TLS, sni="secure.example.test") == {"b2": 1}
    assert scene.tcp(c, TLS, sni="one.example.test") == {"b1": 1}
    assert scene.tcp(c, TLS, sni="elsewhere.test") == {"c": 1}


def test_connect_goes_to_its_authority_never_to_the_dialled_address(scene: Scene) -> None:
    """The shared route table's CONNECT routes (VirtualService tls rules at
    a sidecar, connect.py) on a captured HTTP port: the app dials C, an
    address of its choosing, and CONNECTs to a wildcard name the rule
    allows. The tunnel goes to the name (which does not resolve: 503),
    never to C, which a PassthroughCluster (ORIGINAL_DST here) would reach."""
    c = scene.c.ip
    assert scene.http(scene.a, c, HTTP, "c.outside.test", 1) == {"c": 1}  # C is reachable
    answer = scene.connect(c, HTTP, "x.wild.test:443")
    assert answer.startswith("HTTP/1.1 503"), answer
    assert "\r\n\r\nc" not in answer  # C's HTTP app says "c"
    # A name no rule allows gets no tunnel at all.
    assert scene.connect(c, HTTP, f"{c}:{HTTP}").startswith("HTTP/1.1 404")

    (scene.config / "sidecar.yaml").write_text(REGISTRY_ONLY)
    try:
        wait_for(lambda: "c" not in scene.tcp(c, OUTSIDE), what="REGISTRY_ONLY in force")
        answer = scene.connect(c, HTTP, "x.wild.test:443")
        assert answer.startswith("HTTP/1.1 503"), answer
        assert "\r\n\r\nc" not in answer
        assert not scene.connect(c, HTTP, f"{c}:{HTTP}").startswith("HTTP/1.1 200")
    finally:
        (scene.config / "sidecar.yaml").unlink()
        wait_for(lambda: scene.tcp(c, OUTSIDE) == {"c": 1}, what="ALLOW_ANY again")


def test_outbound_traffic_policy_and_removing_the_rules(scene: Scene) -> None:
    c = scene.c.ip
    # ALLOW_ANY: a destination no service names passes through, on a port
    # no listener has (virtualOutbound) and on an HTTP port (by Host).
    assert scene.tcp(c, OUTSIDE) == {"c": 1}
    assert scene.http(scene.a, c, HTTP, "c.outside.test", 1) == {"c": 1}

    (scene.config / "sidecar.yaml").write_text(REGISTRY_ONLY)
    wait_for(lambda: "c" not in scene.tcp(c, OUTSIDE), what="REGISTRY_ONLY in force")
    assert scene.tcp(c, OUTSIDE) == {"error:closed": 1}
    assert scene.http(scene.a, c, HTTP, "c.outside.test", 1) == {"status:502": 1}
    # The mesh's own destinations still work; the proxy's own traffic is
    # not captured (it reached sailplane and the backends all along).
    assert set(scene.http(scene.a, scene.b1.ip, HTTP, f"backend:{HTTP}", 20)) <= {"b1", "b2"}
    assert scene.tcp(c, OUTSIDE, uid=PROXY_UID) == {"c": 1}

    # Without the rules the app's connections go straight out again.
    sailplane(scene.net, scene.a, "capture", "--remove")
    assert scene.tcp(c, OUTSIDE) == {"c": 1}
    assert scene.http(scene.a, scene.b1.ip, HTTP, f"backend:{HTTP}", 20) == {"b1": 20}
