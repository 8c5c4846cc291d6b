"""RequestAuthentication and the JWT parts of AuthorizationPolicy through real
Envoys (mTLS on between the sidecars), with tokens signed here (RS256, a key
made for the test) and Istio's semantics: a valid token passes, an invalid
one (bad signature, expired, another issuer) gets 401 from ``jwt_authn``
(another audience: 403, as Envoy words it), a request without a token
passes authentication and is judged by AuthorizationPolicy (403 under a
``requestPrincipals`` policy). Also:
``jwksUri`` fetched by the proxy from a local server through a ServiceEntry
cluster, and a dry-run DENY that is counted but not enforced."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

SIDECAR = {"security.istio.io/tlsMode": "istio"}
ISSUER = "testing@secure.istio.io"
URL = "http://weather-backend:5000"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """An RSA key, its JWKS, and RS256 tokens signed with it."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        numbers = self.key.public_key().public_numbers()
        jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid}
        return json.dumps({"keys": [{**jwk, "n": _int(numbers.n), "e": _int(numbers.e)}]})

    def token(self, **claims: Any) -> str:
        exp = int(time.time()) + 600
        payload = {"iss": ISSUER, "sub": "alice", "aud": "weather", "exp": exp}
        payload.update(claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = self.key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signed}.{_b64(signature)}"


def _call(spec: WorkloadSpec, path: str, token: str | None = None) -> tuple[int, bytes]:
    host, port = spec.outbound.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        conn.request("GET", f"{URL}{path}", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _mesh(mesh: Mesh, extra: list[dict[str, Any]] | None = None) -> tuple[WorkloadSpec, ...]:
    client = mesh.workload("client", {"app": "client", **SIDECAR}, service_account="client")
    backend = mesh.workload(
        "weather-backend", {"app": "weather-backend", **SIDECAR}, service_account="backend"
    )
    mesh.write_registry([service("weather-backend"), *(extra or [])])
    mesh.start_control_plane()
    mesh.start_app(backend)
    for spec in (backend, client):
        mesh.start_envoy(spec)
    mesh.wait_synced(client.id, backend.id)
    for spec in (backend, client):
        mesh.wait_listening(spec)
    return client, backend


def _request_authentication(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "weather-backend"}},
                "jwtRules": [{"issuer": ISSUER, "audiences": ["weather"], **rule}],
            },
        }
    ]


REQUIRE_ALICE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: weather-backend}}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/alice"]
"""

REQUIRE_GROUP = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: weather-backend}}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
"""

DRY_RUN_DENY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-path-headers
  namespace: default
  annotations: {"istio.io/dry-run": "true"}
spec:
  selector: {matchLabels: {app: weather-backend}}
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"""


def test_valid_token_200_invalid_401_missing_403_and_claims(mesh: Mesh) -> None:
    signer, other = Signer("k1"), Signer("k1")
    client, _ = _mesh(mesh)
    mesh.write("jwt.yaml", _request_authentication({"jwks": signer.jwks()}))
    # RequestAuthentication alone: a bad token is refused, none is fine.
    wait_for(lambda: _call(client, "/api/weather", "not-a-jwt")[0] == 401, what="jwt_authn on")
    assert _call(client, "/api/weather")[0] == 200
    assert _call(client, "/api/weather", signer.token())[0] == 200

    mesh.write("authz.yaml", REQUIRE_ALICE)
    wait_for(lambda: _call(client, "/api/weather")[0] == 403, what="requestPrincipals policy")
    status, body = _call(client, "/api/weather")
    assert (status, body) == (403, b"RBAC: access denied")  # no token: AuthorizationPolicy
    assert _call(client, "/api/weather", signer.token())[0] == 200
    invalid = {
        "bad signature": other.token(),
        "expired": signer.token(exp=int(time.time()) - 600),  # beyond the 60 s clock skew
        "another issuer": signer.token(iss="someone@else.example"),
    }
    for what, token in invalid.items():
        status, body = _call(client, "/api/weather", token)
        assert status == 401, (what, status, body)
    # Envoy (and so Istio) answers a token for another audience with 403.
    wrong_audience = _call(client, "/api/weather", signer.token(aud="billing"))
    assert wrong_audience == (403, b"Audiences in Jwt are not allowed")
    # Valid, but not the principal the policy names.
    assert _call(client, "/api/weather", signer.token(sub="bob"))[0] == 403
    # The token is verified, then stripped (forwardOriginalToken is false).
    headers = json.loads(_call(client, "/headers", signer.token())[1])["headers"]
    assert "authorization" not in {k.lower() for k in headers}

    mesh.write("authz.yaml", REQUIRE_GROUP)
    group1 = signer.token(sub="carol", groups=["group1", "group2"])
    wait_for(lambda: _call(client, "/api/weather", group1)[0] == 200, what="claims policy")
    assert _call(client, "/api/weather", signer.token(groups=["group2"]))[0] == 403
    assert _call(client, "/api/weather", signer.token(groups="group1"))[0] == 200  # a string
    assert _call(client, "/api/weather", signer.token())[0] == 403  # no groups claim


class _JwksServer:
    """A local JWKS endpoint that counts its fetches."""

    def __init__(self, address: str, port: int, jwks: str) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = jwks.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def jwks_server(mesh: Mesh) -> Iterator[tuple[WorkloadSpec, _JwksServer, Signer]]:
    signer = Signer("remote")
    spec = mesh.external("jwks-server")
    server = _JwksServer(spec.address, spec.port, signer.jwks())
    try:
        yield spec, server, signer
    finally:
        server.close()


def test_jwks_uri_fetched_by_the_proxy_through_a_service_entry_and_dry_run(
    mesh: Mesh, jwks_server: tuple[WorkloadSpec, _JwksServer, Signer]
) -> None:
    spec, server, signer = jwks_server
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "jwks", "namespace": "default"},
        "spec": {
            "hosts": ["jwks.example.test"],
            "location": "MESH_EXTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": spec.port, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": spec.address}],
        },
    }
    client, backend = _mesh(mesh, [entry])
    uri = f"http://jwks.example.test:{spec.port}/jwks.json"
    mesh.write("jwt.yaml", _request_authentication({"jwksUri": uri}))
    wait_for(lambda: _call(client, "/api/weather", "not-a-jwt")[0] == 401, what="jwt_authn on")
    assert server.hits == 0  # nobody fetched the keys yet: the control plane never does
    mesh.write("authz.yaml", REQUIRE_ALICE)
    wait_for(lambda: _call(client, "/api/weather")[0] == 403, what="requestPrincipals policy")
    assert _call(client, "/api/weather", signer.token())[0] == 200
    assert server.hits >= 1  # the proxy fetched the keys, through the ServiceEntry's cluster
    assert _call(client, "/api/weather", Signer("remote").token())[0] == 401

    # A dry-run DENY: the request passes, the shadow counter moves.
    mesh.write("dry-run.yaml", DRY_RUN_DENY)
    # Envoy joins the shadow prefix and the counter with a dot.
    counter = "http.inbound_5000.rbac.istio_dry_run_deny_.shadow_denied"
    before = mesh.stat(backend, counter)
    wait_for(
        lambda: (
            _call(client, "/headers", signer.token())[0] == 200
            and mesh.stat(backend, counter) > before
        ),
        what="dry-run DENY counted, not enforced",
    )
    assert mesh.stat(backend, "http.inbound_5000.rbac.deny.denied") == 0
    assert _call(client, "/api/weather", signer.token())[0] == 200
