"""Telemetry metric overrides through real Envoy: a disabled metric on one
side disappears from /metrics while the others stay; a removed tag is gone
and an upserted one (from a request header the proxy now logs) appears."""

from __future__ import annotations

import pytest

from tests.e2e.test_telemetry import (
    BACKEND,
    WEATHER,
    scrape,
    settled,
    start,
    telemetry,
    total,
    weather,
)
from tests.support.mesh import Mesh, service
from tests.support.traffic import send

pytestmark = pytest.mark.e2e


def test_disabling_and_retagging_metrics_shows_on_metrics(mesh: Mesh) -> None:
    frontend, (backend,) = weather(mesh, "single")
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    overrides = [
        # docs-telemetry/10: no istio_requests_total from the client side.
        {"disabled": True, "match": {"mode": "CLIENT", "metric": "REQUEST_COUNT"}},
        {
            "match": {"mode": "SERVER", "metric": "REQUEST_COUNT"},
            "tagOverrides": {
                "grpc_response_status": {"operation": "REMOVE"},
                "user": {"value": "request.headers['x-user']"},
                "source_x": {"value": "downstream_peer.labels['app'].value"},
            },
        },
    ]
    mesh.write(
        "telemetry.yaml",
        [telemetry({"metrics": [{"providers": [{"name": "prometheus"}], "overrides": overrides}]})],
    )
    start(mesh, backend, frontend)

    requests = 5
    replies = send(frontend.outbound, WEATHER, requests, headers={"x-user": "alice"})
    assert {r.status for r in replies} == {200}

    client = {"reporter": "source", "destination_service": BACKEND}
    settled(mesh, "istio_request_duration_milliseconds_count", requests, **client)
    server = {"reporter": "destination", "destination_service": BACKEND}
    samples = settled(mesh, "istio_requests_total", requests, **server)
    counts = [s for s in samples if s.name == "istio_requests_total"]
    # Only the server side counts requests; the client's histograms remain.
    assert {s.labels["reporter"] for s in counts} == {"destination"}
    assert total(samples, "istio_response_bytes_count", **client) == requests
    # The server's request count: tag removed, header tag and peer tag added.
    for sample in counts:
        assert "grpc_response_status" not in sample.labels
        assert sample.labels["user"] == "alice"
        assert sample.labels["source_x"] == "weather-frontend"
        assert sample.labels["source_workload"] == "weather-frontend"
    # Other metrics of the same side keep Istio's standard labels.
    durations = [
        s
        for s in scrape(mesh)
        if s.name == "istio_request_duration_milliseconds_count"
        and s.labels["reporter"] == "destination"
    ]
    assert durations
    assert all("user" not in s.labels and "grpc_response_status" in s.labels for s in durations)
