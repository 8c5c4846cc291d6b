"""Telemetry ``accessLogging[].filter`` through real Envoy: a file access log
with ``response.code >= 500`` writes the 503 and not the 200, while
sailplane's istio_requests_total (from the unfiltered stream) counts both; a
filter Envoy would NACK is refused at load and the last good one stays."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_telemetry import (
    WEATHER,
    mesh_settings,
    settled,
    start,
    telemetry,
    total,
    weather,
)
from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import wait_for
from tests.support.traffic import send

pytestmark = pytest.mark.e2e

FAULT = "http://weather-backend:5000/fault/now"


def fault_route() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "weather-backend"},
        "spec": {
            "hosts": ["weather-backend"],
            "http": [
                {
                    "match": [{"uri": {"prefix": "/fault"}}],
                    "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
                    "route": [{"destination": {"host": "weather-backend"}}],
                },
                {"route": [{"destination": {"host": "weather-backend"}}]},
            ],
        },
    }


def write_telemetry(mesh: Mesh, log: Path, expression: str) -> None:
    mesh.write(
        "telemetry.yaml",
        [
            mesh_settings(
                {
                    "extensionProviders": [
                        {"name": "errors", "envoyFileAccessLog": {"path": str(log)}}
                    ]
                }
            ),
            telemetry(
                {
                    "accessLogging": [
                        {"providers": [{"name": "errors"}], "filter": {"expression": expression}}
                    ]
                }
            ),
        ],
    )


def flushed_lines(mesh: Mesh, log: Path, *proxies: WorkloadSpec) -> list[str]:
    """The log's lines after the proxies flush it (Envoy buffers file logs
    for up to 10 s; reopening flushes)."""
    for spec in proxies:
        request = urllib.request.Request(f"http://{spec.admin}/reopen_logs", method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200
    return log.read_text().splitlines() if log.exists() else []


def test_the_filter_keeps_the_200_out_of_the_log_and_the_metrics_count_both(
    mesh: Mesh, tmp_path: Path
) -> None:
    frontend, (backend,) = weather(mesh, "v1")
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write("traffic.yaml", [fault_route()])
    log = tmp_path / "errors.log"
    write_telemetry(mesh, log, "response.code >= 500")
    start(mesh, backend, frontend)

    assert [r.status for r in send(frontend.outbound, WEATHER, 3)] == [200] * 3
    assert [r.status for r in send(frontend.outbound, FAULT, 2)] == [503] * 2

    # The metrics come from sailplane's own stream: every request, unfiltered.
    source = {"reporter": "source", "source_workload": "weather-frontend"}
    samples = settled(mesh, "istio_requests_total", 2, **source, response_code="503")
    assert total(samples, "istio_requests_total", **source, response_code="200") == 3
    settled(mesh, "istio_requests_total", 3, reporter="destination", response_code="200")

    # The file log: the two 503s (client side; the fault never reached the
    # backend), none of the 200s from either side.
    def errors() -> list[str] | None:
        lines = flushed_lines(mesh, log, frontend, backend)
        return lines if len(lines) >= 2 else None

    lines = wait_for(errors, what="the 503s in the access log")
    assert len(lines) == 2, lines
    assert all('"GET /fault/now HTTP/1.1" 503 FI' in line for line in lines), lines

    # A filter Envoy would NACK: refused with its place, the good one stays.
    write_telemetry(mesh, log, "response.code >= (500")

    def refused() -> list[str]:
        return [
            f"{d['file']}:{d['line']}: {d['field']}: {d['message']}"
            for d in mesh.configz()["diagnostics"]
            if d["severity"] == "error"
        ]

    (problem,) = wait_for(refused, what="the bad filter reported")
    assert re.match(
        r"telemetry\.yaml:\d+: spec\.accessLogging\[0\]\.filter\.expression: access log filter "
        r"'response\.code >= \(500' is not a CEL expression Envoy takes: expected '\)'",
        problem,
    ), problem
    assert not any(t.get("error") for s in mesh.syncz() for t in s["types"].values())
    assert [r.status for r in send(frontend.outbound, WEATHER, 2)] == [200] * 2
    assert [r.status for r in send(frontend.outbound, FAULT, 1)] == [503]
    settled(mesh, "istio_requests_total", 3, **source, response_code="503")
    settled(mesh, "istio_requests_total", 5, **source, response_code="200")
    lines = wait_for(
        lambda: got if len(got := flushed_lines(mesh, log, frontend, backend)) >= 3 else None,
        what="the third 503",
    )
    assert len(lines) == 3 and all(" 503 " in line for line in lines), lines
