"""Mirror percentages and HTTP/2 upgrade through real Envoy.

Mirroring: ``mirrorPercent: 50`` (the deprecated integer field) mirrors
about half the requests, within 5 standard deviations of the binomial
spread of 400 requests; ``mirrorPercent: 0`` mirrors none (Istio emits no
mirror policy at all). The copies are counted where they leave the client's
sidecar, on the mirror clusters.

h2UpgradePolicy: UPGRADE makes the client's sidecar speak HTTP/2 (h2c) to
the backend's sidecar; the same backend under a host without the rule is
reached over HTTP/1.1.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.mesh import OUTBOUND_STATS, Mesh, service
from tests.support.procs import wait_for
from tests.support.traffic import send

pytestmark = pytest.mark.e2e


def outbound(host: str) -> str:
    return f"cluster.outbound|5000||{host}.default.svc.cluster.local"


def test_mirror_percent_mirrors_that_share_and_zero_mirrors_none(mesh: Mesh) -> None:
    client = mesh.workload("client", {"app": "client"}, annotations=OUTBOUND_STATS)
    backend = mesh.workload("hello", {"app": "hello"})
    shadow = mesh.workload("shadow", {"app": "shadow"})
    mesh.write_registry([service("client"), service("hello"), service("shadow")])
    destination = {"destination": {"host": "hello"}}
    routes: list[dict[str, Any]] = [
        {
            "match": [{"uri": {"prefix": "/api/weather"}}],
            "route": [destination],
            "mirror": {"host": "shadow"},
            "mirrorPercent": 50,
        },
        {"route": [destination], "mirror": {"host": "shadow"}, "mirrorPercent": 0},
    ]
    mesh.write(
        "vs.yaml",
        [
            {
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "VirtualService",
                "metadata": {"name": "hello"},
                "spec": {"hosts": ["hello"], "http": routes},
            }
        ],
    )
    mesh.start_control_plane()
    mesh.start_app(backend, sidecar=False)
    mesh.start_app(shadow, sidecar=False)
    mesh.start_envoy(client)
    mesh.wait_synced(client.id)
    mesh.wait_listening(client)

    assert {r.status for r in send(client.outbound, "http://hello:5000/headers", 100)} == {200}
    assert mesh.stat(client, f"{outbound('shadow')}.upstream_rq_total") == 0

    replies = send(client.outbound, "http://hello:5000/api/weather", 400, concurrency=4)
    assert {r.status for r in replies} == {200}
    total, done = f"{outbound('shadow')}.upstream_rq_total", f"{outbound('shadow')}.upstream_rq_200"
    # Copies are sent alongside the requests; wait until every one is answered.
    wait_for(lambda: mesh.stat(client, done) == mesh.stat(client, total) > 0, what="mirrors done")
    mirrored = mesh.stat(client, done)
    # Binomial(400, 0.5): mean 200, standard deviation 10; 5 of them either side.
    assert 150 <= mirrored <= 250, mirrored
    assert mesh.stat(client, f"{outbound('hello')}.upstream_rq_200") == 500


def test_h2_upgrade_policy_upgrade_speaks_h2c_to_the_backend(mesh: Mesh) -> None:
    client = mesh.workload("client", {"app": "client"}, annotations=OUTBOUND_STATS)
    backend = mesh.workload("hello", {"app": "hello"})
    # Two hosts for one backend: only "hello" has the rule.
    plain = service("hello-plain", selector={"app": "hello"})
    mesh.write_registry([service("client"), service("hello"), plain])
    upgrade = {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}
    mesh.write(
        "dr.yaml",
        [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "hello"},
                "spec": {"host": "hello", "trafficPolicy": upgrade},
            }
        ],
    )
    mesh.start_control_plane()
    mesh.start_app(backend)
    mesh.start_envoy(client)
    mesh.start_envoy(backend)
    mesh.wait_synced(client.id, backend.id)
    for spec in (client, backend):
        mesh.wait_listening(spec)

    for host in ("hello", "hello-plain"):
        replies = send(client.outbound, f"http://{host}:5000/api/weather", 20)
        assert {r.status for r in replies} == {200}, host
    upgraded, plain_name = outbound("hello"), outbound("hello-plain")
    assert mesh.stat(client, f"{upgraded}.upstream_cx_http2_total") >= 1
    assert mesh.stat(client, f"{upgraded}.upstream_cx_http1_total") == 0
    assert mesh.stat(client, f"{plain_name}.upstream_cx_http1_total") >= 1
    assert mesh.stat(client, f"{plain_name}.upstream_cx_http2_total") == 0
    # The backend's sidecar took both on one inbound port, one of them as HTTP/2.
    inbound = "cluster.inbound|5000||.upstream_rq_200"
    assert mesh.stat(backend, inbound) == 40
    assert "http2.rx_reset" not in mesh.admin(backend, "/stats?usedonly&filter=http2.rx_reset")
