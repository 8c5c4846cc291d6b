"""Access log entries -> Istio's metrics and JSON logs, without Envoy: the
receiver is fed the messages Envoy's gRPC access loggers send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from prometheus_client.parser import text_string_to_metric_families

from sailplane.ca import CertificateAuthority, IdentityStore
from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.telemetry import (
    ALS_SERVICE,
    AccessLogReceiver,
    AccessLogWriter,
    IstioMetrics,
    StreamState,
)
from sailplane.telemetry.attributes import response_flags
from sailplane.translate.telemetry import (
    DOWNSTREAM_PEER,
    LOG_INBOUND,
    LOG_OUTBOUND,
    METADATA_NAMESPACE,
    UPSTREAM_PEER,
)

BACKEND = "backend.default.svc.cluster.local"
MESH = """
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}, {name: tcp-db, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend}
spec:
  address: 10.0.0.10
  serviceAccount: frontend
  labels: {app: frontend, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec:
  address: 10.0.0.1
  serviceAccount: backend
  labels: {app: backend, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2}
spec:
  address: backend-v2.compose
  serviceAccount: backend
  labels: {app: backend, version: v2, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: sailplane}]
"""


def spiffe(sa: str) -> str:
    return f"spiffe://cluster.local/ns/default/sa/{sa}"


@pytest.fixture
def mesh() -> MeshConfig:
    result = load_texts([("mesh.yaml", MESH)])
    assert result.mesh is not None
    return result.mesh


def http_entry(
    cluster: str,
    upstream: str = "",
    code: int = 200,
    peer: tuple[str, str] | None = None,
    principal: str = "",
    path: str = "/api",
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry(
        protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP11
    )
    common = entry.common_properties
    common.upstream_cluster = cluster
    if upstream:
        host, port = upstream.rsplit(":", 1)
        common.upstream_remote_address.socket_address.address = host
        common.upstream_remote_address.socket_address.port_value = int(port)
    common.downstream_remote_address.socket_address.address = "127.0.0.1"
    common.downstream_local_address.socket_address.port_value = 5000
    common.duration.FromMilliseconds(12)
    if peer is not None:
        common.metadata.filter_metadata[METADATA_NAMESPACE].update({peer[0]: peer[1]})
    if principal:
        common.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=principal)
    entry.request.request_method = 1  # GET
    entry.request.path = path
    entry.request.authority = "backend:5000"
    entry.request.request_headers_bytes = 100
    entry.request.request_body_bytes = 20
    entry.response.response_code.value = code
    entry.response.response_headers_bytes = 80
    entry.response.response_body_bytes = 300
    return entry


def message(
    *entries: accesslog_pb2.HTTPAccessLogEntry, node: str = "", log: str = LOG_OUTBOUND
) -> als_pb2.StreamAccessLogsMessage:
    msg = als_pb2.StreamAccessLogsMessage()
    if node:
        msg.identifier.node.id = node
        msg.identifier.log_name = log
    msg.http_logs.log_entry.extend(entries)
    return msg


def samples(metrics: IstioMetrics) -> list[Any]:
    return [s for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples]


def total(found: list[Any], name: str, **labels: str) -> float:
    return float(
        sum(
            s.value
            for s in found
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
    )


def receiver(mesh: MeshConfig, tmp_path: Path | None = None) -> AccessLogReceiver:
    writer = AccessLogWriter(str(tmp_path / "log.jsonl")) if tmp_path else None
    return AccessLogReceiver(lambda: mesh, IstioMetrics(), writer)


def feed(
    target: AccessLogReceiver, node: str, *entries: Any, log: str = LOG_OUTBOUND
) -> StreamState:
    state = StreamState(node_id=node, outbound=log == LOG_OUTBOUND)
    target.receive(state, message(*entries))
    return state


def test_outbound_entries_become_reporter_source_series(mesh: MeshConfig, tmp_path: Path) -> None:
    target = receiver(mesh, tmp_path)
    feed(
        target,
        "frontend.default",
        *[http_entry(f"outbound|5000|v1|{BACKEND}", "10.0.0.1:5000")] * 3,
        # A DNS-named instance: named by the peer header it returned.
        http_entry(
            f"outbound|5000||{BACKEND}",
            "172.18.0.5:5000",
            peer=(UPSTREAM_PEER, "backend-v2.default"),
        ),
        # Faulted before any upstream: the service is known, the workload is not.
        http_entry(f"outbound|5000||{BACKEND}", code=503),
    )
    found = samples(target.metrics)
    v1 = {"reporter": "source", "destination_version": "v1"}
    assert total(found, "istio_requests_total", **v1) == 3
    assert total(found, "istio_request_duration_milliseconds_count", **v1) == 3
    assert total(found, "istio_request_duration_milliseconds_sum", **v1) == 36
    assert total(found, "istio_request_bytes_sum", **v1) == 3 * 120
    assert total(found, "istio_response_bytes_sum", **v1) == 3 * 380
    assert total(found, "istio_response_bytes_bucket", le="100", **v1) == 0
    assert total(found, "istio_response_bytes_bucket", le="1000", **v1) == 3
    assert total(found, "istio_requests_total", destination_workload="backend-v2") == 1
    labels = next(s.labels for s in found if s.labels.get("destination_version") == "v1")
    assert labels["source_workload"] == "frontend"
    assert labels["source_principal"] == spiffe("frontend")  # auto mTLS to a sidecar
    assert labels["destination_principal"] == spiffe("backend")
    assert labels["destination_service_name"] == "backend"
    assert labels["connection_security_policy"] == "unknown"
    faulted = next(s.labels for s in found if s.labels.get("response_code") == "503")
    assert faulted["destination_service"] == BACKEND
    assert faulted["destination_workload"] == "unknown"
    assert target.writer is not None
    target.writer.close()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert records[0]["method"] == "GET"
    assert records[0]["peer_principal"] == spiffe("backend")
    assert records[0]["upstream_cluster"] == f"outbound|5000|v1|{BACKEND}"


def test_a_forged_upstream_peer_name_is_not_believed(mesh: MeshConfig) -> None:
    target = receiver(mesh)
    # backend-v2 is no instance of the v1 subset: fall back to the address.
    feed(
        target,
        "frontend.default",
        http_entry(
            f"outbound|5000|v1|{BACKEND}",
            "10.0.0.1:5000",
            peer=(UPSTREAM_PEER, "backend-v2.default"),
        ),
    )
    assert (
        total(samples(target.metrics), "istio_requests_total", destination_workload="backend-v1")
        == 1
    )


def test_inbound_entries_name_the_caller_by_certificate_and_peer_header(
    mesh: MeshConfig,
) -> None:
    target = receiver(mesh)
    feed(
        target,
        "backend-v1.default",
        http_entry(
            "inbound|5000||",
            peer=(DOWNSTREAM_PEER, "frontend.default"),
            principal=spiffe("frontend"),
        ),
        # A plaintext caller without a sidecar.
        http_entry("inbound|5000||"),
        # A caller claiming to be the frontend with someone else's certificate.
        http_entry(
            "inbound|5000||",
            peer=(DOWNSTREAM_PEER, "frontend.default"),
            principal=spiffe("backend"),
        ),
        log=LOG_INBOUND,
    )
    found = samples(target.metrics)
    mtls = {"reporter": "destination", "connection_security_policy": "mutual_tls"}
    assert total(found, "istio_requests_total", source_workload="frontend", **mtls) == 1
    assert (
        total(found, "istio_requests_total", destination_principal=spiffe("backend"), **mtls) == 2
    )
    plain = {"reporter": "destination", "connection_security_policy": "none"}
    assert (
        total(
            found,
            "istio_requests_total",
            source_workload="unknown",
            source_principal="unknown",
            **plain,
        )
        == 1
    )
    # Two workloads hold the backend identity: which one called is unknown.
    assert (
        total(
            found,
            "istio_requests_total",
            source_principal=spiffe("backend"),
            source_workload="unknown",
        )
        == 1
    )
    assert total(found, "istio_requests_total", destination_service=BACKEND) == 3


def test_unknown_proxies_count_nothing(mesh: MeshConfig) -> None:
    target = receiver(mesh)
    feed(target, "intruder.default", http_entry(f"outbound|5000||{BACKEND}"))
    assert total(samples(target.metrics), "istio_requests_total") == 0
    assert target.stats.entries[("http", "unknown_proxy")] == 1


def test_tcp_connections_are_counted_once_with_exact_bytes(mesh: MeshConfig) -> None:
    target = receiver(mesh)
    state = StreamState(node_id="backend-v1.default", outbound=False)

    def tcp(received: int, sent: int, end: bool) -> als_pb2.StreamAccessLogsMessage:
        entry = accesslog_pb2.TCPAccessLogEntry()
        entry.common_properties.upstream_cluster = "inbound|7000||"
        entry.common_properties.stream_id = "conn-1"
        entry.common_properties.intermediate_log_entry = not end
        entry.connection_properties.received_bytes = received
        entry.connection_properties.sent_bytes = sent
        msg = als_pb2.StreamAccessLogsMessage()
        msg.tcp_logs.log_entry.append(entry)
        return msg

    labels = {
        "reporter": "destination",
        "destination_workload": "backend-v1",
        "request_protocol": "tcp",
    }
    target.receive(state, tcp(0, 0, end=False))  # connected
    found = samples(target.metrics)
    assert total(found, "istio_tcp_connections_opened_total", **labels) == 1
    assert total(found, "istio_tcp_connections_closed_total", **labels) == 0
    target.receive(state, tcp(1000, 10, end=False))  # periodic: bytes so far
    assert total(samples(target.metrics), "istio_tcp_received_bytes_total", **labels) == 1000
    target.receive(state, tcp(1500, 30, end=True))
    found = samples(target.metrics)
    assert total(found, "istio_tcp_received_bytes_total", **labels) == 1500
    assert total(found, "istio_tcp_sent_bytes_total", **labels) == 30
    assert total(found, "istio_tcp_connections_opened_total", **labels) == 1
    assert total(found, "istio_tcp_connections_closed_total", **labels) == 1
    assert (
        next(s.labels for s in found if s.name == "istio_tcp_sent_bytes_total")[
            "destination_service"
        ]
        == BACKEND
    )
    assert state.connections == {}


def test_counters_never_go_backwards_across_proxy_restarts(mesh: MeshConfig) -> None:
    target = receiver(mesh)
    entry = http_entry(f"outbound|5000|v1|{BACKEND}", "10.0.0.1:5000")
    feed(target, "frontend.default", entry, entry)
    # The proxy restarts: a new stream, counting from zero on its side.
    feed(target, "frontend.default", entry)
    assert total(samples(target.metrics), "istio_requests_total") == 3


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, "-"),
        ({"fault_injected": True}, "FI"),
        ({"upstream_connection_failure": True, "upstream_retry_limit_exceeded": True}, "UF,URX"),
        ({"rate_limited": True, "unauthorized_details": {}}, "RL,UAEX"),
    ],
    ids=["none", "fault", "several", "unauthorized"],
)
def test_response_flags_are_envoys_short_names(flags: dict[str, bool], expected: str) -> None:
    assert response_flags(accesslog_pb2.ResponseFlags(**flags)) == expected


def test_exposition_uses_istios_names() -> None:
    metrics = IstioMetrics()
    text = metrics.render().decode()
    for name in (
        "istio_requests_total counter",
        "istio_request_duration_milliseconds histogram",
        "istio_tcp_sent_bytes_total counter",
        "istio_tcp_connections_closed_total counter",
    ):
        assert f"# TYPE {name}" in text


# -- over gRPC -----------------------------------------------------------------------


async def test_a_stream_over_grpc_is_attributed_to_its_node(mesh: MeshConfig) -> None:
    target = receiver(mesh)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([target.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary(
                f"/{ALS_SERVICE}/StreamAccessLogs",
                request_serializer=als_pb2.StreamAccessLogsMessage.SerializeToString,
                response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
            )
            entry = http_entry(f"outbound|5000|v1|{BACKEND}", "10.0.0.1:5000")
            await call(
                iter([message(entry, node="frontend.default"), message(entry), message(entry)])
            )
    finally:
        await server.stop(0)
    found = samples(target.metrics)
    assert total(found, "istio_requests_total", source_workload="frontend") == 3


def test_on_the_mtls_port_a_proxy_may_report_only_as_itself(mesh: MeshConfig) -> None:
    target = receiver(mesh)
    identities = IdentityStore(CertificateAuthority.create_self_signed())
    frontend = identities.get_workload("default", "frontend").cert_chain_pem
    assert target._check_identity("frontend.default", [frontend]) == ""
    assert "belongs to" in target._check_identity("backend-v1.default", [frontend])
    assert target._check_identity("backend-v1.default", []) == ""  # the plaintext port
