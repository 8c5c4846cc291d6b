"""A DestinationRule with a workloadSelector, through real Envoys.

Istio applies it only to the proxies of its namespace whose labels it
selects (pilot/pkg/model/sidecar.go SidecarScope.DestinationRule), before a
rule without a selector for the same host. Both rules here define a subset
``pinned``, with other labels: the canary client's requests reach v3, the
other client's v1, from the same VirtualService.
"""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.mesh import Mesh, WorkloadSpec, service

pytestmark = pytest.mark.e2e

RULES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: weather-backend}
spec:
  host: weather-backend
  subsets: [{name: pinned, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: weather-backend-canary}
spec:
  host: weather-backend
  workloadSelector: {matchLabels: {track: canary}}
  subsets: [{name: pinned, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weather-backend}
spec:
  hosts: [weather-backend]
  http: [{route: [{destination: {host: weather-backend, subset: pinned}}]}]
"""


def _version(client: WorkloadSpec) -> str:
    host, port = client.outbound.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "http://weather-backend:5000/api/weather")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return str(json.loads(body)["version"])
    finally:
        conn.close()


def test_the_selected_client_uses_its_own_rule(mesh: Mesh) -> None:
    plain = mesh.workload("client", {"app": "client"})
    canary = mesh.workload("canary-client", {"app": "client", "track": "canary"})
    v1 = mesh.workload("backend-v1", {"app": "weather-backend", "version": "v1"})
    v3 = mesh.workload("backend-v3", {"app": "weather-backend", "version": "v3"})
    mesh.write_registry([service("weather-backend")])
    mesh.write("rules.yaml", RULES)
    mesh.start_control_plane()
    for backend in (v1, v3):
        mesh.start_app(backend, sidecar=False)
    for client in (plain, canary):
        mesh.start_envoy(client)
    mesh.wait_synced(plain.id, canary.id)
    mesh.wait_listening(plain)
    mesh.wait_listening(canary)
    assert {_version(plain) for _ in range(5)} == {"v1"}
    assert {_version(canary) for _ in range(5)} == {"v3"}
