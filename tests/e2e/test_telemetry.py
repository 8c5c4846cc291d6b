"""Telemetry through real Envoy: Istio's standard metrics with exact counts,
JSON and Envoy access logs, TCP byte counters, and traces across two hops.

Counts are polled until they settle (Envoy sends its access log batches
every 0.5 s); nothing sleeps in place of an assertion.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import free_port, http_get, wait_for
from tests.support.traffic import send

pytestmark = pytest.mark.e2e

BACKEND = "weather-backend.default.svc.cluster.local"
WEATHER = "http://weather-backend:5000/api/weather"
MESH_TLS = {"security.istio.io/tlsMode": "istio"}
DASHBOARD = (
    Path(__file__).resolve().parents[2]
    / "sailplane/examples/weather/observability/grafana/dashboards/weather.json"
)


def spiffe(service_account: str) -> str:
    return f"spiffe://cluster.local/ns/default/sa/{service_account}"


def mesh_settings(mesh: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": yaml.safe_dump(mesh)},
    }


def telemetry(spec: dict[str, Any], name: str = "mesh-default") -> dict[str, Any]:
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": spec,
    }


def weather(mesh: Mesh, *versions: str) -> tuple[WorkloadSpec, list[WorkloadSpec]]:
    frontend = mesh.workload(
        "weather-frontend",
        {"app": "weather-frontend", "version": "v1", **MESH_TLS},
        service_account="weather-frontend",
    )
    backends = [
        mesh.workload(
            f"weather-backend-{version}",
            {"app": "weather-backend", "version": version, **MESH_TLS},
            service_account="weather-backend",
        )
        for version in versions
    ]
    return frontend, backends


def start(
    mesh: Mesh,
    *specs: WorkloadSpec,
    apps: bool = True,
    extra: tuple[str, ...] = (),
    secure: bool = False,
) -> None:
    """``secure``: the proxies use the mTLS xDS port (access logs go there too)."""
    mesh.start_control_plane(*extra)
    address = f"127.0.0.1:{mesh.secure_xds_port}"
    bootstrap = ("--secure", "--ca-dir", str(mesh.ca_dir), "--xds-address", address)
    for spec in specs:
        if apps:
            mesh.start_app(spec, role="frontend" if spec.name == "weather-frontend" else "backend")
        mesh.start_envoy(spec, *(bootstrap if secure else ()))
    mesh.wait_synced(*(s.id for s in specs))
    for spec in specs:
        mesh.wait_listening(spec)


# -- reading metrics -----------------------------------------------------------


def scrape(mesh: Mesh, path: str = "/stats/prometheus") -> list[Any]:
    """Every sample of the exposition, parsed as Prometheus would."""
    status, body = http_get(mesh.monitor(path))
    assert status == 200, body
    return [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]


def total(samples: list[Any], name: str, **labels: str) -> float:
    return float(
        sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
    )


def settled(mesh: Mesh, name: str, expected: float, **labels: str) -> list[Any]:
    """Poll until the metric reaches ``expected`` (it must not pass it)."""
    samples: list[Any] = []

    def reached() -> bool:
        nonlocal samples
        samples = scrape(mesh)
        value = total(samples, name, **labels)
        assert value <= expected, f"{name}{labels} = {value}, more than {expected}"
        return value == expected

    try:
        wait_for(reached, timeout=20, what=f"{name}{labels} == {expected}")
    except TimeoutError:
        value = total(samples, name, **labels)
        raise AssertionError(f"{name}{labels} = {value} != {expected}") from None
    return samples


# -- HTTP metrics and access logs --------------------------------------------------------


def test_standard_metrics_count_every_request_of_the_canary(mesh: Mesh, tmp_path: Path) -> None:
    frontend, (single, multiple) = weather(mesh, "single", "multiple")
    split = [
        {"destination": {"host": "weather-backend", "subset": s}, "weight": w}
        for s, w in (("single", 90), ("multiple", 10))
    ]
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write(
        "traffic.yaml",
        [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "weather-backend"},
                "spec": {
                    "host": "weather-backend",
                    "subsets": [
                        {"name": v, "labels": {"version": v}} for v in ("single", "multiple")
                    ],
                },
            },
            {
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
                        {"route": split},
                    ],
                },
            },
        ],
    )
    mesh.write(
        "telemetry.yaml",
        [
            mesh_settings({"accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON"}),
            telemetry(
                {"accessLogging": [{"providers": [{"name": "sailplane"}, {"name": "envoy"}]}]}
            ),
        ],
    )
    access_log = tmp_path / "access.jsonl"
    start(mesh, single, multiple, frontend, extra=("--access-log-file", str(access_log)))
    prometheus = start_prometheus(mesh, tmp_path)

    requests, faults = 200, 7
    replies = send(frontend.outbound, WEATHER, requests)
    assert {r.status for r in replies} == {200}
    got = Counter(r.version for r in replies)
    fault_replies = send(frontend.outbound, "http://weather-backend:5000/fault/now", faults)
    assert [r.status for r in fault_replies] == [503] * faults

    source = {"reporter": "source", "source_workload": "weather-frontend"}
    ok = {**source, "response_code": "200", "destination_service": BACKEND}
    samples = settled(mesh, "istio_requests_total", requests, **ok)
    for version in ("single", "multiple"):
        served = {**ok, "destination_version": version}
        assert total(samples, "istio_requests_total", **served) == got[version], version
        for histogram in (
            "istio_request_duration_milliseconds",
            "istio_request_bytes",
            "istio_response_bytes",
        ):
            assert total(samples, f"{histogram}_count", **served) == got[version], histogram
    assert 0 < got["multiple"] < got["single"]
    # Istio's labels, all of them known here (auto mTLS between sidecars).
    one = next(
        s.labels
        for s in samples
        if s.name == "istio_requests_total"
        and s.labels["reporter"] == "source"
        and s.labels["destination_version"] == "single"
    )
    assert one == {
        "reporter": "source",
        "source_workload": "weather-frontend",
        "source_canonical_service": "weather-frontend",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "default",
        "source_principal": spiffe("weather-frontend"),
        "source_app": "weather-frontend",
        "source_version": "v1",
        "destination_workload": "weather-backend-single",
        "destination_workload_namespace": "default",
        "destination_principal": spiffe("weather-backend"),
        "destination_app": "weather-backend",
        "destination_version": "single",
        "destination_service": BACKEND,
        "destination_canonical_service": "weather-backend",
        "destination_canonical_revision": "single",
        "destination_service_name": "weather-backend",
        "destination_service_namespace": "default",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "unknown",
    }
    # The backends' sidecars report the same requests, with the caller's identity
    # from its certificate.
    inbound = {
        "reporter": "destination",
        "source_workload": "weather-frontend",
        "source_principal": spiffe("weather-frontend"),
        "destination_service_name": "weather-backend",
        "connection_security_policy": "mutual_tls",
        "response_code": "200",
    }
    samples = settled(mesh, "istio_requests_total", requests, **inbound)
    for version in ("single", "multiple"):
        assert (
            total(samples, "istio_requests_total", **inbound, destination_version=version)
            == got[version]
        )
    # The injected fault never left the frontend's sidecar.
    samples = settled(
        mesh, "istio_requests_total", faults, **source, response_code="503", response_flags="FI"
    )
    assert total(samples, "istio_requests_total", reporter="destination", response_code="503") == 0
    # Envoy sent every entry (it drops, and counts, what it cannot send).
    for spec in (frontend, single, multiple):
        assert mesh.stat(spec, "access_logs.grpc_access_log.logs_dropped") == 0
        assert mesh.stat(spec, "access_logs.grpc_access_log.logs_written") > 0
    # /metrics carries the same series, next to the control plane's own.
    everything = scrape(mesh, "/metrics")
    assert total(everything, "istio_requests_total", **ok) == requests
    assert any(s.name.startswith("pilot_xds_pushes") for s in everything)

    # JSON access logs written by sailplane: both sides of every request.
    def lines() -> list[dict[str, Any]]:
        text = access_log.read_text() if access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    wait_for(lambda: len(lines()) == 2 * requests + faults, what="JSON access log lines")
    logged = lines()
    outbound = [r for r in logged if r["reporter"] == "source" and r["path"] == "/api/weather"]
    assert len(outbound) == requests
    record = outbound[0]
    assert record["method"] == "GET"
    assert record["response_code"] == 200
    assert record["duration_ms"] >= 0
    assert record["upstream_cluster"] in (
        f"outbound|5000|single|{BACKEND}",
        f"outbound|5000|multiple|{BACKEND}",
    )
    assert record["peer_principal"] == spiffe("weather-backend")
    assert record["proxy"] == frontend.id
    server_side = next(r for r in logged if r["reporter"] == "destination")
    assert server_side["peer_principal"] == spiffe("weather-frontend")
    assert server_side["upstream_cluster"] == "inbound|5000||"
    assert server_side["connection_security_policy"] == "mutual_tls"
    fault = next(r for r in logged if r["path"] == "/fault/now")
    assert (fault["response_code"], fault["response_flags"]) == (503, "FI")

    # Envoy's own file access log, in Istio's JSON format, on the proxy's stdout.
    def envoy_lines() -> list[dict[str, Any]]:
        log = mesh.envoys[frontend.name].log()
        return [json.loads(line) for line in log.splitlines() if line.startswith("{")]

    # (Envoy writes its file logs in 64 KiB chunks or every 10 s: the first
    # chunk is enough here.)
    first = wait_for(envoy_lines, what="Envoy access log lines")[0]
    assert first["method"] == "GET"
    assert first["upstream_cluster"].startswith("outbound|5000|")

    if prometheus is not None:
        prometheus.expect("sum(istio_requests_total)", 2 * requests + faults)
        prometheus.check_dashboard(DASHBOARD)

    # A proxy that goes away adds nothing more; its series stay as they were.
    before = scrape(mesh)
    mesh.envoys[multiple.name].stop()
    after = scrape(mesh)
    gone = {"destination_workload": "weather-backend-multiple"}
    assert total(after, "istio_requests_total", **gone) == 2 * got["multiple"]
    assert total(after, "istio_requests_total") == total(before, "istio_requests_total")


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port

    def query(self, query: str) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query}
        )
        status, body = http_get(url)
        return status, json.loads(body)

    def expect(self, query: str, expected: float) -> None:
        def answer() -> bool:
            status, body = self.query(query)
            result = body["data"]["result"] if status == 200 else []
            return bool(result) and float(result[0]["value"][1]) == expected

        wait_for(answer, timeout=30, interval=0.2, what=f"prometheus: {query} == {expected}")

    def check_dashboard(self, path: Path) -> None:
        """Every query of the Grafana dashboard is valid PromQL, and those
        about HTTP requests find series."""
        panels = json.loads(path.read_text())["panels"]
        queries = [
            t["expr"].replace("$service", ".*") for p in panels for t in p.get("targets", ())
        ]
        for expr in queries:
            status, body = self.query(expr)
            assert status == 200 and body["status"] == "success", (expr, body)
        # rate() needs two scrapes of a series.
        with_data = [
            q for q in queries if "istio_requests_total" in q and "5.." not in q and "4.." not in q
        ]
        wait_for(
            lambda: all(self.query(q)[1]["data"]["result"] for q in with_data),
            timeout=20,
            interval=0.5,
            what="every dashboard query about requests has series",
        )


def start_prometheus(mesh: Mesh, tmp_path: Path) -> Prometheus | None:
    """A real Prometheus scraping sailplane every second, when the system has
    one (Debian's `prometheus` package); otherwise the exposition is checked
    with prometheus_client's parser alone."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "sailplane",
                        "metrics_path": "/stats/prometheus",
                        "static_configs": [{"targets": [f"127.0.0.1:{mesh.monitor_port}"]}],
                    }
                ],
            }
        )
    )
    mesh.group.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    return Prometheus(port)


# -- TCP ---------------------------------------------------------------------------------


class ByteServer:
    """The app behind a TCP port: reads an 8-byte length and that many bytes,
    answers ``reply`` bytes and closes. (The client never half-closes first:
    on a PERMISSIVE port Envoy's TLS inspector drops a connection whose peer
    closes before the inspector has decided, as Istio's does.)"""

    def __init__(self, address: str, port: int, reply: int) -> None:
        self.reply = reply
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            wanted = int.from_bytes(self._read(conn, 8), "big")
            self._read(conn, wanted)
            conn.sendall(b"r" * self.reply)

    @staticmethod
    def _read(conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(min(65536, count - len(data)))
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()


def read_all(conn: socket.socket) -> int:
    """Read until the server closes; the number of bytes read."""
    received = 0
    while chunk := conn.recv(65536):
        received += len(chunk)
    conn.close()
    return received


def exchange(address: str, port: int, payload: int) -> int:
    """Send a length and ``payload`` bytes, read the answer until the server
    closes; returns the bytes received (the client sent ``8 + payload``)."""
    conn = socket.create_connection((address, port), timeout=10)
    conn.sendall(payload.to_bytes(8, "big") + b"s" * payload)
    return read_all(conn)


def test_tcp_byte_counters_match_the_client_to_the_byte(mesh: Mesh) -> None:
    echo = mesh.workload("echo", {"app": "echo", "version": "v1", **MESH_TLS})
    echo_service = service("echo", port=9000)
    echo_service["spec"]["ports"][0]["name"] = "tcp-echo"
    mesh.write_registry([echo_service])
    # Report open connections every second (Istio's reportingInterval).
    mesh.write("telemetry.yaml", [telemetry({"metrics": [{"reportingInterval": "1s"}]})])
    app = ByteServer(echo.app_address, 9000, reply=7777)
    try:
        start(mesh, echo, apps=False)
        payloads = (1, 12345, 100_000)
        received = [exchange(echo.address, 9000, n) for n in payloads]
        sent = sum(8 + n for n in payloads)
        assert received == [7777] * 3
        labels = {"reporter": "destination", "destination_workload": "echo"}
        settled(mesh, "istio_tcp_connections_closed_total", 3, **labels)
        samples = settled(mesh, "istio_tcp_received_bytes_total", sent, **labels)
        assert total(samples, "istio_tcp_sent_bytes_total", **labels) == sum(received)
        assert total(samples, "istio_tcp_connections_opened_total", **labels) == 3
        one = next(s.labels for s in samples if s.name == "istio_tcp_sent_bytes_total")
        assert one["request_protocol"] == "tcp"
        assert one["destination_service"] == "echo.default.svc.cluster.local"
        assert one["connection_security_policy"] == "none"
        assert one["source_workload"] == "unknown"  # a client without a sidecar

        # A connection still open reports its bytes so far, then its close.
        conn = socket.create_connection((echo.address, 9000), timeout=10)
        conn.sendall((5000).to_bytes(8, "big") + b"s" * 4000)
        settled(mesh, "istio_tcp_connections_opened_total", 4, **labels)
        settled(mesh, "istio_tcp_received_bytes_total", sent + 4008, **labels)
        assert total(scrape(mesh), "istio_tcp_connections_closed_total", **labels) == 3
        conn.sendall(b"s" * 1000)
        received.append(read_all(conn))
        settled(mesh, "istio_tcp_connections_closed_total", 4, **labels)
        samples = settled(mesh, "istio_tcp_received_bytes_total", sent + 5008, **labels)
        assert total(samples, "istio_tcp_sent_bytes_total", **labels) == sum(received) == 4 * 7777
    finally:
        app.close()


# -- tracing -----------------------------------------------------------------------------


class OtlpReceiver:
    """A test OTLP/gRPC collector: keeps every exported span."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[tuple[str, Any]] = []  # (service.name, span)
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self.export,
                    request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                    response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers([handler])
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                name = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                # xds-protos ships OTLP before its rename of this field (same wire number).
                scopes = getattr(resource_spans, "instrumentation_library_spans", None)
                for scope in scopes if scopes is not None else resource_spans.scope_spans:
                    self.spans.extend((name, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def stop(self) -> None:
        self.server.stop(0)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()


def test_one_request_is_one_trace_across_frontend_and_backend(
    mesh: Mesh, otlp: OtlpReceiver
) -> None:
    frontend, (backend,) = weather(mesh, "single")
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.write(
        "telemetry.yaml",
        [
            mesh_settings(
                {
                    "extensionProviders": [
                        {
                            "name": "otel",
                            "opentelemetry": {"service": "127.0.0.1", "port": otlp.port},
                        }
                    ]
                }
            ),
            telemetry(
                {"tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 100}]}
            ),
        ],
    )
    start(mesh, backend, frontend, secure=True)
    # Envoy exports a batch once it holds 5 spans: 5 requests fill every proxy's.
    for _ in range(5):
        status, body = http_get(f"http://{frontend.address}:5000/")
        assert status == 200, body

    def one_trace() -> list[tuple[str, Any]] | None:
        with otlp.lock:
            spans = list(otlp.spans)
        for _, server in spans:
            if server.kind != server.SPAN_KIND_SERVER or server.parent_span_id:
                continue
            trace = [(n, s) for n, s in spans if s.trace_id == server.trace_id]
            if {n for n, _ in trace} == {"weather-frontend.default", "weather-backend.default"}:
                return trace
        return None

    trace = wait_for(one_trace, timeout=20, what="a trace with frontend and backend spans")
    spans = {(name, span.kind): span for name, span in trace}
    kinds = trace[0][1]
    front_in = spans[("weather-frontend.default", kinds.SPAN_KIND_SERVER)]
    front_out = spans[("weather-frontend.default", kinds.SPAN_KIND_CLIENT)]
    back_in = spans[("weather-backend.default", kinds.SPAN_KIND_SERVER)]
    # user -> frontend sidecar (root) -> frontend app -> its sidecar -> backend sidecar
    assert not front_in.parent_span_id
    assert front_out.parent_span_id == front_in.span_id
    assert back_in.parent_span_id == front_out.span_id
    assert len({s.trace_id for s in (front_in, front_out, back_in)}) == 1
    # The access log streams came over the mTLS xDS port, each proxy as itself.
    hop = {"source_workload": "weather-frontend", "destination_workload": "weather-backend-single"}
    settled(mesh, "istio_requests_total", 5, reporter="source", **hop)
    settled(mesh, "istio_requests_total", 5, reporter="destination", **hop)
