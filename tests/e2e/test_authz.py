"""AuthorizationPolicy and the outbound traffic policy, through real Envoys
with mTLS on (workloads carry Istio's sidecar label, so auto mTLS applies)."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

SIDECAR = {"security.istio.io/tlsMode": "istio"}

DENY_ALL = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: backend}
spec: {}
"""

ALLOW_FRONTEND = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: backend}
spec:
  selector:
    matchLabels: {app: weather-backend}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/weather-frontend"]
    to:
    - operation:
        methods: [GET]
        paths: ["/api/*", "/headers"]
"""

DENY_NOT_PATHS = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-outside-api, namespace: backend}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        notPaths: ["/api/*"]
"""

WHEN_HEADER = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: beta-users, namespace: backend}
spec:
  action: ALLOW
  rules:
  - when:
    - key: request.headers[x-user-group]
      values: ["beta*"]
"""

IP_BLOCKS = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-office, namespace: backend}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        ipBlocks: ["{block}"]
"""


def _call(
    spec: WorkloadSpec, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    host, port = spec.outbound.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, target, body=b"" if method == "POST" else None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _direct(address: str, path: str) -> int:
    conn = http.client.HTTPConnection(address, 5000, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _mesh(mesh: Mesh) -> tuple[WorkloadSpec, WorkloadSpec, WorkloadSpec]:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", **SIDECAR},
        service_account="weather-frontend",
    )
    other = mesh.workload(
        "other-client", {"app": "other-client", **SIDECAR}, service_account="other-client"
    )
    backend = mesh.workload(
        "weather-backend",
        {"app": "weather-backend", **SIDECAR},
        namespace="backend",
        service_account="weather-backend",
    )
    mesh.write_registry([service("weather-backend", namespace="backend")])
    mesh.start_control_plane()
    mesh.start_app(backend)
    for spec in (backend, frontend, other):
        mesh.start_envoy(spec)
    mesh.wait_synced(frontend.id, other.id, backend.id)
    for spec in (backend, frontend, other):
        mesh.wait_listening(spec)
    return frontend, other, backend


URL = "http://weather-backend.backend:5000"


def test_deny_all_then_allow_only_the_frontend(mesh: Mesh) -> None:
    frontend, other, _ = _mesh(mesh)
    assert _call(frontend, f"{URL}/api/weather")[0] == 200

    mesh.write("deny-all.yaml", DENY_ALL)
    _, body = wait_for(
        lambda: (r := _call(frontend, f"{URL}/api/weather"))[0] == 403 and r,
        what="deny-all in force",
    )
    assert body == b"RBAC: access denied"
    assert _call(other, f"{URL}/api/weather")[0] == 403

    mesh.write("allow-frontend.yaml", ALLOW_FRONTEND)
    wait_for(lambda: _call(frontend, f"{URL}/api/weather")[0] == 200, what="frontend allowed")
    # The caller's identity is the SPIFFE ID of its certificate, not a header.
    headers = json.loads(_call(frontend, f"{URL}/headers")[1])["headers"]
    assert (
        "spiffe://cluster.local/ns/default/sa/weather-frontend"
        in headers["x-forwarded-client-cert"]
    )
    assert _call(other, f"{URL}/api/weather")[0] == 403  # another identity
    # Method and path rules: GET /api/* yes, POST no, other paths no.
    assert _call(frontend, f"{URL}/api/weather", "POST")[0] == 403
    assert _call(frontend, f"{URL}/status/200")[0] == 403

    # Removing the policies reopens access without restarting anything.
    (mesh.config_dir / "deny-all.yaml").unlink()
    (mesh.config_dir / "allow-frontend.yaml").unlink()
    wait_for(lambda: _call(other, f"{URL}/api/weather")[0] == 200, what="access reopened")


def test_deny_not_paths_header_conditions_and_ip_blocks(mesh: Mesh) -> None:
    frontend, other, backend = _mesh(mesh)

    # DENY with notPaths: everything outside /api/* is denied (Istio's example).
    mesh.write("deny.yaml", DENY_NOT_PATHS)
    wait_for(lambda: _call(frontend, f"{URL}/status/200")[0] == 403, what="DENY notPaths")
    assert _call(frontend, f"{URL}/api/weather")[0] == 200
    (mesh.config_dir / "deny.yaml").unlink()

    # `when` on a request header.
    mesh.write("when.yaml", WHEN_HEADER)
    wait_for(lambda: _call(frontend, f"{URL}/api/weather")[0] == 403, what="header condition")
    assert _call(frontend, f"{URL}/api/weather", headers={"x-user-group": "beta-1"})[0] == 200
    assert _call(frontend, f"{URL}/api/weather", headers={"x-user-group": "alpha"})[0] == 403
    (mesh.config_dir / "when.yaml").unlink()

    # ipBlocks on the plaintext side of a PERMISSIVE port: a client without a
    # sidecar connects straight to the backend's inbound listener.
    mesh.write("ip.yaml", IP_BLOCKS.replace("{block}", "127.200.0.0/16"))
    wait_for(lambda: _direct(backend.address, "/api/weather") == 403, what="ipBlocks deny")
    mesh.write("ip.yaml", IP_BLOCKS.replace("{block}", "127.0.0.0/8"))
    wait_for(lambda: _direct(backend.address, "/api/weather") == 200, what="ipBlocks allow")
    del other


def test_invalid_policy_fails_closed(mesh: Mesh) -> None:
    frontend, _, _ = _mesh(mesh)
    broken = ALLOW_FRONTEND.replace(
        '"cluster.local/ns/default/sa/weather-frontend"',
        '"spiffe://cluster.local/ns/default/sa/weather-frontend"',
    )
    mesh.write("allow.yaml", broken)
    wait_for(
        lambda: _call(frontend, f"{URL}/api/weather")[0] == 403,
        what="a broken policy denies, never allows all",
    )
    diagnostics = [d for d in mesh.configz()["diagnostics"] if d.get("object")]
    assert any("must not start with spiffe://" in d["message"] and d["line"] for d in diagnostics)


def test_registry_only_blocks_unknown_hosts(mesh: Mesh) -> None:
    client = mesh.workload("client", {"app": "client"})
    known = mesh.external("api-known")
    unknown = mesh.external("api-unknown")
    mesh.write_registry([])
    mesh.write(
        "egress.yaml",
        f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: known-api}}
spec:
  hosts: [api.known.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 5000, name: http, protocol: HTTP}}]
  endpoints: [{{address: {known.address}}}]
""",
    )
    mesh.start_control_plane()
    for spec in (known, unknown):
        mesh.start_app(spec, sidecar=False)
    mesh.start_envoy(client)
    mesh.wait_synced(client.id)
    mesh.wait_listening(client)
    # ALLOW_ANY (the default): an address the registry does not know passes through.
    assert _call(client, f"http://{unknown.address}:5000/api/weather")[0] == 200
    mesh.write(
        "sidecar.yaml",
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""",
    )
    _, body = wait_for(
        lambda: (r := _call(client, f"http://{unknown.address}:5000/api/weather"))[0] == 502 and r,
        what="REGISTRY_ONLY blocks unknown hosts",
    )
    assert body == b""  # Istio's block_all answer: a bare 502
    assert _call(client, "http://api.known.example:5000/api/weather")[0] == 200


def test_sidecar_egress_hosts_scope_what_a_proxy_can_reach(mesh: Mesh) -> None:
    client = mesh.workload("client", {"app": "client"})
    local = mesh.workload("local-api", {"app": "local-api"})
    remote = mesh.workload("remote-api", {"app": "remote-api"}, namespace="other")
    mesh.write_registry([service("local-api"), service("remote-api", namespace="other")])
    mesh.start_control_plane()
    for spec in (local, remote):
        mesh.start_app(spec)
        mesh.start_envoy(spec)
    mesh.start_envoy(client)
    mesh.wait_synced(client.id, local.id, remote.id)
    for spec in (client, local, remote):
        mesh.wait_listening(spec)
    assert _call(client, "http://remote-api.other:5000/api/weather")[0] == 200

    mesh.write(
        "sidecar.yaml",
        """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""",
    )
    wait_for(
        lambda: _call(client, "http://remote-api.other:5000/api/weather")[0] == 502,
        what="out-of-scope service blocked",
    )
    assert _call(client, "http://local-api:5000/api/weather")[0] == 200
    # The proxy does not even know the other namespace's clusters any more.
    clusters = mesh.admin(client, "/clusters?format=json")
    assert "remote-api.other.svc.cluster.local" not in clusters
    assert "local-api.default.svc.cluster.local" in clusters
