"""Real Envoy, real gRPC, real apps: the core path end to end."""

from __future__ import annotations

import json
import threading

import pytest

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import http_get, wait_for

pytestmark = pytest.mark.e2e


def weather_mesh(mesh: Mesh) -> tuple[WorkloadSpec, WorkloadSpec, WorkloadSpec]:
    frontend = mesh.workload("weather-frontend", {"app": "weather-frontend", "version": "v1"})
    single = mesh.workload(
        "weather-backend-single", {"app": "weather-backend", "version": "single"}
    )
    multiple = mesh.workload(
        "weather-backend-multiple", {"app": "weather-backend", "version": "multiple"}
    )
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    return frontend, single, multiple


def test_frontend_reaches_backend_through_both_sidecars(mesh: Mesh) -> None:
    frontend, single, multiple = weather_mesh(mesh)
    mesh.start_control_plane()
    for spec in (frontend, single, multiple):
        mesh.start_app(spec, role="frontend" if spec is frontend else "backend")
        mesh.start_envoy(spec)
    streams = mesh.wait_synced(frontend.id, single.id, multiple.id)
    assert {s["proxy"] for s in streams} == {frontend.id, single.id, multiple.id}
    for stream in streams:
        for kind in ("clusters", "listeners", "endpoints", "routes"):
            assert stream["types"][kind]["sent"] == stream["types"][kind]["acked"]
    mesh.wait_listening(frontend)
    mesh.wait_listening(single)
    mesh.wait_listening(multiple)

    # The user calls the frontend app; it calls weather-backend via HTTP_PROXY
    # (its sidecar), which routes to a backend sidecar's inbound listener.
    versions = set()
    for _ in range(20):
        status, body = http_get(f"http://{frontend.app_address}:5000/")
        assert status == 200, body
        backend = json.loads(body)["backend"]
        assert backend["service"] == "weather-backend"
        versions.add(backend["version"])
    assert versions == {"single", "multiple"}  # round robin over both instances

    # The request really crossed the backend sidecars: their inbound clusters counted it.
    counted = sum(
        int(line.rsplit(":", 1)[1])
        for spec in (single, multiple)
        for line in mesh.admin(
            spec, "/stats?filter=cluster.inbound.5000...upstream_rq_total$"
        ).splitlines()
        if line.strip()
    )
    assert counted >= 20


def test_proxy_style_and_origin_form_requests_route_by_host(mesh: Mesh) -> None:
    frontend, single, _ = weather_mesh(mesh)
    mesh.workloads.pop("weather-backend-multiple")
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.start_control_plane()
    mesh.start_app(single)
    mesh.start_envoy(single)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id, single.id)
    mesh.wait_listening(frontend)
    mesh.wait_listening(single)
    import http.client

    host, port = frontend.outbound.split(":")
    names = [
        "weather-backend",
        "weather-backend:5000",
        "weather-backend.default",
        "weather-backend.default:5000",
        "weather-backend.default.svc.cluster.local",
        "weather-backend.default.svc.cluster.local:5000",
    ]
    for name in names:
        for absolute in (True, False):
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            target = f"http://{name}/api/weather" if absolute else "/api/weather"
            conn.request("GET", target, headers={"Host": name})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == 200, (name, absolute, body)
            assert json.loads(body)["version"] == "single"
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        # Not in the registry: ALLOW_ANY passes it through (a forward proxy that
        # resolves the name, which fails here), rather than routing it anywhere.
        conn.request(
            "GET", "http://no-such-service:5000/", headers={"Host": "no-such-service:5000"}
        )
        response = conn.getresponse()
        body = response.read()
        assert response.status == 503, body
        assert b"dns" in body.lower(), body
    finally:
        conn.close()


def test_new_endpoint_reaches_running_envoy_without_failed_requests(mesh: Mesh) -> None:
    frontend, single, multiple = weather_mesh(mesh)
    # `multiple` starts outside the service (its labels match no selector) with its
    # sidecar ready; then it joins weather-backend while traffic flows.
    multiple.labels = {"app": "weather-backend-staging", "version": "multiple"}
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.start_control_plane()
    for spec in (single, multiple):
        mesh.start_app(spec)
        mesh.start_envoy(spec)
    mesh.start_envoy(frontend)
    mesh.wait_synced(frontend.id, single.id, multiple.id)
    for spec in (frontend, single, multiple):
        mesh.wait_listening(spec)

    import http.client

    host, port = frontend.outbound.split(":")
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        while not stop.is_set():
            conn.request("GET", "http://weather-backend:5000/api/weather")
            response = conn.getresponse()
            body = response.read()
            version = (
                json.loads(body)["version"]
                if response.status == 200
                else body.decode()[:200] + str(response.getheaders())
            )
            results.append((response.status, version))
        conn.close()

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: len(results) > 50, what="traffic before the change")
        multiple.labels = {"app": "weather-backend", "version": "multiple"}
        mesh.write_registry([service("weather-frontend"), service("weather-backend")])
        wait_for(
            lambda: any(v == "multiple" for _, v in results[-50:]),
            timeout=20,
            what="traffic to the new endpoint",
        )
        seen = len(results)
        wait_for(lambda: len(results) > seen + 50, what="traffic after the change")
    finally:
        stop.set()
        worker.join(10)
    statuses = {status for status, _ in results}
    assert statuses == {200}, (
        f"{len(results)} requests, statuses {statuses}: {[r for r in results if r[0] != 200][:3]}"
    )
