"""Traffic management through real Envoy: the talk's canary, content-based
routing, fault injection, timeouts and retries, circuit breaking, mirroring,
egress, and workloads without a sidecar.

Requests go to a sidecar's outbound listener as an app's HTTP client sends
them through ``HTTP_PROXY`` (absolute-form URLs, keep-alive), or to the
ingress gateway as a browser would. Statistical bounds are 3.5 standard
deviations or more of the binomial spread for the request counts used.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from tests.support.mesh import OUTBOUND_STATS, Mesh, WorkloadSpec, service
from tests.support.procs import http_get, wait_for
from tests.support.traffic import Client, Load, Reply, percentages, send

pytestmark = pytest.mark.e2e

BACKEND = "weather-backend.default.svc.cluster.local"
WEATHER = "http://weather-backend:5000/api/weather"


# -- configuration -----------------------------------------------------------


def subsets_rule(traffic_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The talk's DestinationRule: subsets ``single`` and ``multiple``."""
    spec: dict[str, Any] = {
        "host": "weather-backend",
        "subsets": [
            {"name": "single", "labels": {"version": "single"}},
            {"name": "multiple", "labels": {"version": "multiple"}},
        ],
    }
    if traffic_policy is not None:
        spec["trafficPolicy"] = traffic_policy
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": "weather-backend-destination"},
        "spec": spec,
    }


def virtual_service(
    name: str, http: list[dict[str, Any]], hosts: tuple[str, ...] = ("weather-backend",)
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": list(hosts), "http": http},
    }


def to(subset: str = "") -> dict[str, Any]:
    """A route destination: weather-backend, or one of its subsets."""
    destination = {"host": "weather-backend"}
    if subset:
        destination["subset"] = subset
    return {"destination": destination}


def canary(single: int, multiple: int) -> list[dict[str, Any]]:
    """The talk's YAML (DestinationRule, Gateway, gateway-bound VirtualService),
    plus the same split inside the mesh for sidecars."""
    split = [
        {
            "destination": {"host": "weather-backend", "subset": subset, "port": {"number": 5000}},
            "weight": weight,
        }
        for subset, weight in (("single", single), ("multiple", multiple))
    ]
    return [
        subsets_rule(),
        {
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "Gateway",
            "metadata": {"name": "weather-backend-gateway"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": "weather-backend-service"},
            "spec": {
                "hosts": ["*"],
                "gateways": ["weather-backend-gateway"],
                "http": [{"match": [{"uri": {"exact": "/api/weather"}}], "route": split}],
            },
        },
        virtual_service("weather-backend-mesh", [{"route": split}]),
    ]


# -- processes ---------------------------------------------------------------


def weather_workloads(mesh: Mesh) -> tuple[WorkloadSpec, WorkloadSpec, WorkloadSpec]:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", "version": "v1"},
        annotations=OUTBOUND_STATS,
    )
    single = mesh.workload(
        "weather-backend-single", {"app": "weather-backend", "version": "single"}
    )
    multiple = mesh.workload(
        "weather-backend-multiple", {"app": "weather-backend", "version": "multiple"}
    )
    return frontend, single, multiple


def registry(mesh: Mesh) -> None:
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])


def start(
    mesh: Mesh,
    proxies: tuple[WorkloadSpec, ...],
    backends: tuple[WorkloadSpec, ...] = (),
    gateways: tuple[WorkloadSpec, ...] = (),
) -> None:
    """Start the control plane, the backends' apps (with sidecars if in
    ``proxies``) and every proxy; return once all are synced and listening."""
    mesh.start_control_plane()
    for spec in backends:
        mesh.start_app(spec, sidecar=spec in proxies)
    for spec in proxies:
        mesh.start_envoy(spec)
    for spec in gateways:
        # No role in the bootstrap: the Gateway's selector makes it a gateway.
        mesh.start_envoy(spec, detect_role=True)
    everyone = (*proxies, *gateways)
    mesh.wait_synced(*(spec.id for spec in everyone))
    for spec in everyone:
        mesh.wait_listening(spec)


def versions(replies: list[Reply]) -> dict[str, float]:
    assert {r.status for r in replies} == {200}, sorted({r.status for r in replies})
    return percentages(r.version for r in replies)


# -- the talk's canary -------------------------------------------------------


def test_canary_90_10_through_sidecar_and_gateway_and_live_change_to_50_50(mesh: Mesh) -> None:
    frontend, single, multiple = weather_workloads(mesh)
    # The ingress gateway serves the Gateway's port 80 on 8080 (no privileges).
    gateway = mesh.workload("ingress-gateway", {"istio": "ingressgateway"}, ports={"http": 8080})
    registry(mesh)
    mesh.write("traffic.yaml", canary(90, 10))
    start(mesh, (frontend, single, multiple), (single, multiple), (gateway,))
    ingress = f"{gateway.address}:8080"

    through_sidecar = versions(send(frontend.outbound, WEATHER, 2000, concurrency=2))
    through_gateway = versions(
        send(ingress, "/api/weather", 2000, host="weather.example.com", concurrency=2)
    )
    print(f"90/10: sidecar {through_sidecar}, gateway {through_gateway}")
    for split in (through_sidecar, through_gateway):
        assert split["single"] == pytest.approx(90, abs=3)
        assert split["multiple"] == pytest.approx(10, abs=3)

    # 50/50 in the YAML while both paths carry load: no request may fail.
    sidecar_load = Load(lambda c: c.get(WEATHER), frontend.outbound).start()
    gateway_load = Load(lambda c: c.get("/api/weather", host="weather.example.com"), ingress)
    gateway_load.start()
    try:
        wait_for(lambda: sidecar_load.count() > 200 and gateway_load.count() > 200)
        mesh.write("traffic.yaml", canary(50, 50))
        for spec in (frontend, gateway):
            wait_for(
                lambda spec=spec: (
                    '"weight": 50'
                    in mesh.admin(spec, "/config_dump?resource=dynamic_route_configs")
                ),
                what=f"{spec.name} has the 50/50 routes",
            )
        marks = sidecar_load.count(), gateway_load.count()
        wait_for(
            lambda: (
                sidecar_load.count() > marks[0] + 2000 and gateway_load.count() > marks[1] + 2000
            ),
            timeout=60,
            what="2,000 requests on each path after the change",
        )
    finally:
        sidecar_load.stop()
        gateway_load.stop()
    for load in (sidecar_load, gateway_load):
        failed = [r for r in load.results if not isinstance(r, Reply) or r.status != 200]
        assert not failed, f"{len(failed)} of {len(load.results)} failed: {failed[:5]}"
    after = [
        versions([r for r in load.since(mark) if isinstance(r, Reply)][:2000])
        for load, mark in ((sidecar_load, marks[0]), (gateway_load, marks[1]))
    ]
    print(
        f"50/50: sidecar {after[0]} ({len(sidecar_load.results)} requests in all), "
        f"gateway {after[1]} ({len(gateway_load.results)})"
    )
    for split in after:
        # 2,000 requests: sd 1.1 points.
        assert split["single"] == pytest.approx(50, abs=4)


# -- content-based routing ---------------------------------------------------


def test_header_match_steers_matching_requests_to_multiple(mesh: Mesh) -> None:
    frontend, single, multiple = weather_workloads(mesh)
    registry(mesh)
    routes: list[dict[str, Any]] = [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to("multiple")]},
        {"route": [to("single")]},
    ]
    mesh.write("traffic.yaml", [subsets_rule(), virtual_service("weather-backend", routes)])
    start(mesh, (frontend, single, multiple), (single, multiple))

    matching = send(frontend.outbound, WEATHER, 100, headers={"end-user": "jason"})
    others = send(frontend.outbound, WEATHER, 100, headers={"end-user": "someone-else"})
    others += send(frontend.outbound, WEATHER, 100)
    assert versions(matching) == {"multiple": 100.0}
    assert versions(others) == {"single": 100.0}


def test_virtual_service_host_without_a_service_routes_by_its_name(mesh: Mesh) -> None:
    """Istio gives a mesh VirtualService host that no service has (here
    ``shop.example``, corpus docs-concepts/03's ``bookinfo.com``) a virtual
    host of its own; a live edit of its routes reaches the sidecar."""
    frontend, single, multiple = weather_workloads(mesh)
    registry(mesh)
    shop = ("shop.example",)
    mesh.write(
        "traffic.yaml",
        [subsets_rule(), virtual_service("shop", [{"route": [to("multiple")]}], shop)],
    )
    start(mesh, (frontend, single, multiple), (single, multiple))
    target = "http://shop.example/api/weather"

    assert versions(send(frontend.outbound, target, 20)) == {"multiple": 100.0}
    # The service's own name is untouched by it: both versions answer.
    assert set(versions(send(frontend.outbound, WEATHER, 40))) == {"single", "multiple"}

    mesh.write(
        "traffic.yaml",
        [subsets_rule(), virtual_service("shop", [{"route": [to("single")]}], shop)],
    )
    wait_for(lambda: set(versions(send(frontend.outbound, target, 5))) == {"single"})
    assert versions(send(frontend.outbound, target, 20)) == {"single": 100.0}


# -- fault injection ---------------------------------------------------------


def test_fault_injection_aborts_half_and_delays_only_matched_requests(mesh: Mesh) -> None:
    frontend, single, _ = weather_workloads(mesh)
    mesh.workloads.pop("weather-backend-multiple")
    registry(mesh)
    routes: list[dict[str, Any]] = [
        {
            "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
            "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}},
            "route": [to()],
        },
        {
            "match": [{"headers": {"x-fault": {"exact": "delay"}}}],
            "fault": {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}},
            "route": [to()],
        },
        {"route": [to()]},
    ]
    mesh.write("traffic.yaml", [virtual_service("weather-backend", routes)])
    start(mesh, (frontend, single), (single,))

    aborted = send(frontend.outbound, WEATHER, 1500, headers={"x-fault": "abort"}, concurrency=2)
    statuses = percentages(str(r.status) for r in aborted)
    print(f"abort 50%: {statuses}")
    assert set(statuses) == {"200", "503"}
    # 1,500 requests: sd 1.3 points. Envoy's fault filter answers, not the app
    # (and the default retry policy does not retry a local reply).
    assert statuses["503"] == pytest.approx(50, abs=5)
    assert all(r.body == b"fault filter abort" for r in aborted if r.status == 503)

    delayed: list[float] = []
    plain: list[float] = []
    with Client(frontend.outbound) as client:
        for _ in range(8):
            for kind, times in (("delay", delayed), ("none", plain)):
                reply = client.get(WEATHER, headers={"x-fault": kind})
                assert reply.status == 200
                times.append(reply.elapsed)
    print(
        f"delay 300ms: matched min {min(delayed) * 1000:.0f} ms median "
        f"{statistics.median(delayed) * 1000:.0f} ms; unmatched median "
        f"{statistics.median(plain) * 1000:.1f} ms"
    )
    # Envoy's timers run on its event loop's cached clock: a few ms of slack.
    assert min(delayed) >= 0.29
    assert statistics.median(plain) < min(delayed) - 0.25


# -- timeouts and retries ----------------------------------------------------


def test_retries_recover_a_flaky_backend_and_timeout_cuts_a_slow_one(mesh: Mesh) -> None:
    frontend, single, _ = weather_workloads(mesh)
    mesh.workloads.pop("weather-backend-multiple")
    registry(mesh)
    routes: list[dict[str, Any]] = [
        {
            "match": [{"headers": {"x-retries": {"exact": "3"}}}],
            "retries": {"attempts": 3, "retryOn": "5xx"},
            "route": [to()],
        },
        {"match": [{"uri": {"prefix": "/delay/"}}], "timeout": "500ms", "route": [to()]},
        {"route": [to()]},
    ]
    mesh.write("traffic.yaml", [virtual_service("weather-backend", routes)])
    start(mesh, (frontend, single), (single,))
    base = "http://weather-backend:5000"

    with Client(frontend.outbound) as client:
        # /flaky/KEY/N answers 503 to the first N calls for KEY.
        reply = client.get(f"{base}/flaky/a/3", headers={"x-retries": "3"})
        assert (reply.status, reply.json()["attempt"]) == (200, 4)
        # Istio's default policy (2 retries, 503 among the conditions) is not enough
        # for three failures, and is enough for one.
        reply = client.get(f"{base}/flaky/b/3")
        assert (reply.status, reply.json()["attempt"]) == (503, 3)
        reply = client.get(f"{base}/flaky/c/1")
        assert (reply.status, reply.json()["attempt"]) == (200, 2)

        slow = client.get(f"{base}/delay/2000")
        fast = client.get(f"{base}/delay/100")
    print(f"timeout 500ms: /delay/2000 -> {slow.status} after {slow.elapsed * 1000:.0f} ms")
    assert slow.status == 504
    assert slow.body == b"upstream request timeout"
    assert 0.49 <= slow.elapsed < 1.9  # a few ms of timer slack, as above
    assert fast.status == 200


# -- circuit breaking --------------------------------------------------------


def test_connection_pool_limits_overflow_with_503(mesh: Mesh) -> None:
    frontend, single, _ = weather_workloads(mesh)
    mesh.workloads.pop("weather-backend-multiple")
    registry(mesh)
    pool = {
        "connectionPool": {
            "tcp": {"maxConnections": 1},
            "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1},
        }
    }
    mesh.write("traffic.yaml", [subsets_rule(pool)])
    start(mesh, (frontend, single), (single,))

    # Eight at once on a slow endpoint: one connection, one request waiting,
    # the rest overflow the pending queue.
    replies = send(frontend.outbound, "http://weather-backend:5000/delay/500", 8, concurrency=8)
    statuses = sorted(r.status for r in replies)
    overloaded = [r for r in replies if r.headers.get("x-envoy-overloaded") == "true"]
    overflow = mesh.stat(frontend, f"cluster.outbound|5000||{BACKEND}.upstream_rq_pending_overflow")
    print(f"circuit breaker: statuses {statuses}, upstream_rq_pending_overflow {overflow}")
    assert 200 in statuses
    assert overloaded and all(r.status == 503 for r in overloaded)
    assert {r.status for r in replies} == {200, 503}
    assert overflow == len(overloaded) == statuses.count(503)


def test_outlier_detection_ejects_failing_instances(mesh: Mesh) -> None:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", "version": "v1"},
        annotations=OUTBOUND_STATS,
    )
    healthy = mesh.workload("weather-backend-1", {"app": "weather-backend", "version": "single"})
    broken = [
        mesh.workload(f"weather-backend-{i}", {"app": "weather-backend", "version": "single"})
        for i in (2, 3)
    ]
    registry(mesh)
    detection = {
        "outlierDetection": {
            "consecutive5xxErrors": 2,
            "interval": "1s",
            "baseEjectionTime": "5m",
            "maxEjectionPercent": 100,
        }
    }
    mesh.write("traffic.yaml", [subsets_rule(detection)])
    # Outlier detection is the caller's sidecar's work: the backends need none.
    mesh.start_control_plane()
    mesh.start_app(healthy, sidecar=False)
    for spec in broken:
        mesh.start_app(spec, "backend", "", "", "--fail-path-prefix", "/api", sidecar=False)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id)
    mesh.wait_listening(frontend)

    ejected = f"cluster.outbound|5000||{BACKEND}.outlier_detection.ejections_active"
    with Client(frontend.outbound) as client:
        first = [client.get(WEATHER) for _ in range(12)]
        assert {r.status for r in first} == {200, 500}
        wait_for(lambda: mesh.stat(frontend, ejected) == 2, what="two ejected instances")
        # Envoy applies the first health change at once and merges later ones for
        # up to a second (common_lb_config.update_merge_window); then two of three
        # hosts are out. Istio turns Envoy's panic threshold off (minHealthPercent
        # 0), so traffic stays on the healthy one instead of spreading to all.

        def two_succeed() -> bool:  # round robin: one of two fails while a broken one is in
            return client.get(WEATHER).status == client.get(WEATHER).status == 200

        wait_for(two_succeed, what="traffic on the healthy instance only")
        after = [client.get(WEATHER) for _ in range(60)]
    print(
        f"outlier detection: first 12 {sorted(r.status for r in first)}, "
        f"then {len(after)} x {sorted({(r.status, r.json()['instance']) for r in after})}"
    )
    assert {(r.status, r.json()["instance"]) for r in after} == {(200, healthy.name)}
    assert mesh.stat(frontend, ejected) == 2


# -- mirroring ---------------------------------------------------------------


def test_mirror_copies_requests_to_the_mirror_and_answers_from_primary(mesh: Mesh) -> None:
    frontend, single, multiple = weather_workloads(mesh)
    registry(mesh)
    routes: list[dict[str, Any]] = [
        {"route": [to("single")], "mirror": {"host": "weather-backend", "subset": "multiple"}}
    ]
    mesh.write("traffic.yaml", [subsets_rule(), virtual_service("weather-backend", routes)])
    mesh.start_control_plane()
    mesh.start_app(single)
    # The mirror fails every request: the client must not notice.
    mesh.start_app(multiple, "backend", "", "", "--fail-path-prefix", "/api")
    for spec in (frontend, single, multiple):
        mesh.start_envoy(spec)
    mesh.wait_synced(frontend.id, single.id, multiple.id)
    for spec in (frontend, single, multiple):
        mesh.wait_listening(spec)

    replies = send(frontend.outbound, WEATHER, 50)
    assert versions(replies) == {"single": 100.0}
    # The mirror's own sidecar saw every request (and answered each with 500).
    seen = "cluster.inbound|5000||.upstream_rq_total"
    failed = "cluster.inbound|5000||.upstream_rq_500"
    # A request is counted when it starts, its 500 when the answer is back.
    wait_for(lambda: mesh.stat(multiple, failed) >= 50, what="50 mirrored requests answered")
    assert mesh.stat(multiple, seen) == 50
    assert mesh.stat(multiple, failed) == 50
    assert mesh.stat(single, seen) == 50


# -- egress ------------------------------------------------------------------


def test_external_service_entries_are_reachable_by_host_name(mesh: Mesh) -> None:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", "version": "v1"},
        annotations=OUTBOUND_STATS,
    )
    registry(mesh)
    # An app on another loopback address stands in for hosts outside the mesh.
    outside = mesh.external("weather-api", port=8080)
    entries = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": "weather-api"},
            "spec": {
                "hosts": ["api.weather.example"],
                "location": "MESH_EXTERNAL",
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "endpoints": [{"address": outside.address, "ports": {"http": 8080}}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": "weather-metadata"},
            "spec": {
                "hosts": ["metadata.weather.example"],
                "location": "MESH_EXTERNAL",
                "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                "resolution": "DNS",
                "endpoints": [{"address": outside.address}],
            },
        },
    ]
    mesh.write("egress.yaml", entries)
    mesh.start_control_plane()
    mesh.start_app(outside, sidecar=False)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id)
    mesh.wait_listening(frontend)

    with Client(frontend.outbound) as client:
        for url in (
            "http://api.weather.example/api/weather",
            "http://api.weather.example:80/api/weather",
            "http://metadata.weather.example:8080/api/weather",
        ):
            reply = client.get(url)
            assert reply.status == 200, (url, reply.body)
            assert reply.json()["instance"] == outside.name


# -- workloads without a sidecar --------------------------------------------


def test_workloads_and_clients_without_a_sidecar_keep_working(mesh: Mesh) -> None:
    frontend, single, legacy = weather_workloads(mesh)
    registry(mesh)
    # `legacy` (version multiple) has no sidecar: its app listens on the workload address.
    start(mesh, (frontend, single), (single, legacy))

    # A meshed client reaches both instances, round robin.
    assert versions(send(frontend.outbound, WEATHER, 20)) == {"multiple": 50.0, "single": 50.0}
    # A client without a proxy calls each instance directly: the sidecar-less app,
    # and the meshed one through its sidecar's inbound listener.
    for spec in (legacy, single):
        status, body = http_get(f"http://{spec.address}:5000/api/weather")
        assert status == 200, body
    # Its sidecar counted its ten and the direct one.
    assert mesh.stat(single, "cluster.inbound|5000||.upstream_rq_total") == 11
