"""A dotted external host as Istio reads it, through a real Envoy.

``httpbin.org`` is the host as written (Istio expands only names without a
dot), so the ServiceEntry declares it and the VirtualService's ``timeout``
applies to it (the docs' egress timeout task, corpus docs-traffic/15). The
"external API" is the weather app on a loopback address, reached with
resolution DNS. A route to a subset no DestinationRule defines is accepted
with a warning, as Istio accepts it, and Envoy answers it with a 503.
"""

from __future__ import annotations

import http.client
import time

import pytest

from tests.support.mesh import OUTBOUND_STATS, Mesh, WorkloadSpec, service

pytestmark = pytest.mark.e2e

EGRESS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin-ext}}
spec:
  hosts: [httpbin.org]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: {address}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin-ext}}
spec:
  hosts: [httpbin.org]
  http:
  - match: [{{uri: {{prefix: /canary}}}}]
    route:
    - destination: {{host: httpbin.org, subset: v3}}
  - timeout: 1s
    route:
    - destination: {{host: httpbin.org}}
      weight: 100
"""


def _call(client: WorkloadSpec, target: str) -> tuple[int, bytes, float]:
    host, port = client.outbound.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.monotonic()
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def test_dotted_external_host_with_timeout_and_unknown_subset(mesh: Mesh) -> None:
    client = mesh.workload("client", {"app": "client"}, annotations=OUTBOUND_STATS)
    api = mesh.external("httpbin-stub")
    mesh.write_registry([service("client")])  # an EDS cluster, so that EDS syncs too
    mesh.write("egress.yaml", EGRESS.format(port=api.port, address=api.address))
    mesh.start_control_plane()
    mesh.start_app(api, sidecar=False)
    mesh.start_envoy(client)
    mesh.wait_synced(client.id)
    mesh.wait_listening(client)

    # Both objects are in force: the host is httpbin.org, not
    # httpbin.org.svc.cluster.local; the unknown subset is a warning.
    configz = mesh.configz()
    states = {(o["kind"], o["name"]): o["state"] for o in configz["in_force"]}
    assert states[("VirtualService", "httpbin-ext")] == "active"
    assert states[("ServiceEntry", "httpbin-ext")] == "active"
    (warning,) = [d for d in configz["diagnostics"] if d.get("code") == "IST0101"]
    assert warning["severity"] == "warning" and "unknown subset 'v3'" in warning["message"]

    base = f"http://httpbin.org:{api.port}"
    status, body, _ = _call(client, f"{base}/api/weather")
    assert status == 200 and b"forecast" in body, body
    # The stub answers after 3 s; the route's 1 s timeout answers first.
    status, body, elapsed = _call(client, f"{base}/delay/3000")
    assert status == 504 and body == b"upstream request timeout", body
    assert 0.9 <= elapsed < 2.5, elapsed
    cluster = f"cluster.outbound|{api.port}||httpbin.org"
    assert mesh.stat(client, f"{cluster}.upstream_rq_timeout") == 1
    # The subset's cluster does not exist: Envoy's cluster-not-found 503,
    # with no request sent upstream (the stub would answer 404).
    sent = mesh.stat(client, f"{cluster}.upstream_rq_total")
    status, body, _ = _call(client, f"{base}/canary")
    assert (status, body) == (503, b"")
    assert mesh.stat(client, f"{cluster}.upstream_rq_total") == sent
