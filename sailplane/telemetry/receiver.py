"""The gRPC Access Log Service (``envoy.service.accesslog.v3.AccessLogService``):
every proxy streams one entry per request (per connection, for TCP) to
sailplane, on the same server, port and connection as ADS.

Protocol (Envoy's ``grpc_access_log`` loggers): one client stream per logger
and worker thread; the first message names the node and the log name, later
ones carry batches of entries only. Envoy sends a batch every
``buffer_flush_interval`` or when it holds ``buffer_size_bytes``; it never
waits for sailplane on the request path, and entries it cannot send (stream
down) are dropped and counted in its ``access_logs.grpc_access_log.logs_dropped``.

On the mTLS port the node must be the certificate's own workload, as for
ADS, so no proxy can report traffic in another's name.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from sailplane.ca import identity_of_certificate
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.model.telemetry import MetricShape, WorkloadTelemetry, telemetry_for
from sailplane.telemetry.accesslog import AccessLogWriter, http_record, tcp_record
from sailplane.telemetry.attributes import (
    HTTP_LABELS,
    TCP_LABELS,
    Attributes,
    grpc_status,
    inbound_attributes,
    outbound_attributes,
    request_protocol,
    response_flags,
)
from sailplane.telemetry.index import MeshIndex
from sailplane.telemetry.istio_metrics import IstioMetrics
from sailplane.telemetry.tags import Entry, shaped
from sailplane.translate.telemetry import LOG_INBOUND

log = logging.getLogger("sailplane.telemetry")

ALS_SERVICE = "envoy.service.accesslog.v3.AccessLogService"


def _ms(duration: Any) -> float:
    return float(duration.seconds * 1000 + duration.nanos / 1e6)


@dataclass(slots=True)
class StreamState:
    """What one access log stream has told us so far."""

    node_id: str = ""
    outbound: bool = True
    # TCP connections still open: key -> (received, sent) bytes counted so far.
    connections: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (mesh, workload, plan) of the last message, reused while the mesh stays.
    resolved: tuple[MeshConfig, Workload, WorkloadTelemetry] | None = None


class ReceiverStats:
    """sailplane's own counters for the pipeline (on ``/metrics``)."""

    def __init__(self) -> None:
        self.entries: Counter[tuple[str, str]] = Counter()  # (kind, result)
        self.streams = 0
        self._lock = threading.Lock()

    def count(self, kind: str, result: str, amount: int = 1) -> None:
        with self._lock:
            self.entries[(kind, result)] += amount

    def collect(self) -> Iterable[Metric]:
        entries = CounterMetricFamily(
            "sailplane_access_log_entries",
            "Access log entries received from proxies, by kind (http, tcp) and result "
            "(recorded; unknown_proxy: the node is no WorkloadEntry; intermediate: an "
            "HTTP entry before the end of its stream).",
            labels=("kind", "result"),
        )
        with self._lock:
            for (kind, result), value in sorted(self.entries.items()):
                entries.add_metric((kind, result), value)
            streams = self.streams
        yield entries
        yield GaugeMetricFamily(
            "sailplane_access_log_streams", "Open access log streams from proxies.", streams
        )


class AccessLogReceiver:
    """Turns access log entries into Istio's metrics and JSON access logs."""

    def __init__(
        self,
        mesh: Callable[[], MeshConfig | None],
        metrics: IstioMetrics,
        writer: AccessLogWriter | None = None,
    ) -> None:
        self.mesh = mesh
        self.metrics = metrics
        self.writer = writer
        self.stats = ReceiverStats()
        self._index: MeshIndex | None = None

    # -- gRPC ------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            ALS_SERVICE,
            {
                "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(
                    self.stream_access_logs,
                    request_deserializer=als_pb2.StreamAccessLogsMessage.FromString,
                    response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
                )
            },
        )

    async def stream_access_logs(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> als_pb2.StreamAccessLogsResponse:
        state = StreamState()
        certificate = (context.auth_context() or {}).get("x509_pem_cert") or []
        self.stats.streams += 1
        try:
            async for message in request_iterator:
                if message.HasField("identifier") and not state.node_id:
                    state.node_id = message.identifier.node.id
                    state.outbound = message.identifier.log_name != LOG_INBOUND
                    problem = self._check_identity(state.node_id, certificate)
                    if problem:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
                self.receive(state, message)
        finally:
            self.stats.streams -= 1
        return als_pb2.StreamAccessLogsResponse()

    def _check_identity(self, node_id: str, certificate: list[bytes]) -> str:
        mesh = self.mesh()
        if not certificate or mesh is None:
            return ""
        workload = mesh.workloads_by_id.get(node_id)
        if workload is None:
            return ""  # its entries are dropped as unknown_proxy
        try:
            claimed = identity_of_certificate(certificate[0])
        except ValueError as exc:
            return f"node {node_id!r}: unusable client certificate: {exc}"
        expected = mesh.spiffe_id(workload.namespace, workload.service_account)
        if claimed != expected:
            return (
                f"node {node_id!r} belongs to {expected}, but the client certificate is {claimed}"
            )
        return ""

    # -- entries ---------------------------------------------------------------

    def _resolve(self, state: StreamState) -> tuple[MeshIndex, Workload, WorkloadTelemetry] | None:
        mesh = self.mesh()
        if mesh is None:
            return None
        if self._index is None or self._index.mesh is not mesh:
            self._index = MeshIndex(mesh)
        if state.resolved is None or state.resolved[0] is not mesh:
            workload = mesh.workloads_by_id.get(state.node_id)
            if workload is None:
                state.resolved = None
                return None
            state.resolved = (mesh, workload, telemetry_for(mesh, workload))
        _, workload, plan = state.resolved
        return self._index, workload, plan

    def receive(self, state: StreamState, message: als_pb2.StreamAccessLogsMessage) -> None:
        """One batch of entries (synchronous; tests call it directly)."""
        kind = "tcp" if message.HasField("tcp_logs") else "http"
        entries: Any = message.tcp_logs.log_entry if kind == "tcp" else message.http_logs.log_entry
        if not entries:
            return
        resolved = self._resolve(state)
        if resolved is None:
            self.stats.count(kind, "unknown_proxy", len(entries))
            return
        index, workload, plan = resolved
        shape = plan.metric_shape(state.outbound) if plan.metrics.side(state.outbound) else None
        write_logs = self.writer is not None and plan.sailplane_logs.side(state.outbound)
        records: list[dict[str, Any]] = []
        for entry in entries:
            if kind == "http":
                record = self._http(state, index, workload, entry, shape, write_logs)
            else:
                record = self._tcp(state, index, workload, entry, shape, write_logs)
            if record is not None:
                records.append(record)
        if records and self.writer is not None:
            self.writer.write(records)

    def _attributes(
        self,
        state: StreamState,
        index: MeshIndex,
        workload: Workload,
        common: accesslog_pb2.AccessLogCommon,
        authority: str,
    ) -> Attributes:
        resolve = outbound_attributes if state.outbound else inbound_attributes
        return resolve(index, workload, common, authority)

    def _http(
        self,
        state: StreamState,
        index: MeshIndex,
        workload: Workload,
        entry: accesslog_pb2.HTTPAccessLogEntry,
        shape: MetricShape | None,
        write_logs: bool,
    ) -> dict[str, Any] | None:
        common = entry.common_properties
        if common.intermediate_log_entry:
            self.stats.count("http", "intermediate")
            return None
        request, response = entry.request, entry.response
        base = self._attributes(state, index, workload, common, request.authority)
        attributes = Attributes(
            base.reporter,
            base.source,
            base.destination,
            base.service,
            request_protocol(request),
            str(response.response_code.value),
            grpc_status(response),
            response_flags(common.response_flags),
            base.security,
        )
        duration = _ms(
            common.duration
            if common.HasField("duration")
            else common.time_to_last_downstream_tx_byte
        )
        request_bytes = request.request_headers_bytes + request.request_body_bytes
        response_bytes = response.response_headers_bytes + response.response_body_bytes
        if shape is not None:
            labels = tuple(zip(HTTP_LABELS, attributes.http_labels(), strict=True))
            values = (
                ("REQUEST_COUNT", 1.0),
                ("REQUEST_DURATION", duration),
                ("REQUEST_SIZE", float(request_bytes)),
                ("RESPONSE_SIZE", float(response_bytes)),
            )
            self.metrics.record(shaped(shape, labels, Entry(attributes, common, entry), values))
        self.stats.count("http", "recorded")
        if not write_logs:
            return None
        return http_record(
            state.node_id, attributes, entry, duration, request_bytes, response_bytes
        )

    def _tcp(
        self,
        state: StreamState,
        index: MeshIndex,
        workload: Workload,
        entry: accesslog_pb2.TCPAccessLogEntry,
        shape: MetricShape | None,
        write_logs: bool,
    ) -> dict[str, Any] | None:
        """Entries of one connection: at connect, every reporting interval and
        at its end, each with the bytes so far; counted as differences."""
        common = entry.common_properties
        base = self._attributes(state, index, workload, common, "")
        attributes = Attributes(
            base.reporter,
            base.source,
            base.destination,
            base.service,
            "tcp",
            flags=response_flags(common.response_flags),
            security=base.security,
        )
        key = common.stream_id or (
            f"{common.downstream_remote_address.socket_address.address}:"
            f"{common.downstream_remote_address.socket_address.port_value}>"
            f"{common.downstream_local_address.socket_address.port_value}"
        )
        received = entry.connection_properties.received_bytes
        sent = entry.connection_properties.sent_bytes
        before = state.connections.pop(key, None)
        done = not common.intermediate_log_entry
        if not done:
            state.connections[key] = (received, sent)
        seen_received, seen_sent = before or (0, 0)
        if shape is not None:
            labels = tuple(zip(TCP_LABELS, attributes.tcp_labels(), strict=True))
            values = (
                ("TCP_SENT_BYTES", float(max(sent - seen_sent, 0))),
                ("TCP_RECEIVED_BYTES", float(max(received - seen_received, 0))),
                ("TCP_OPENED_CONNECTIONS", float(before is None)),
                ("TCP_CLOSED_CONNECTIONS", float(done)),
            )
            self.metrics.record(shaped(shape, labels, Entry(attributes, common), values))
        self.stats.count("tcp", "recorded")
        if not (write_logs and done):
            return None
        duration = _ms(common.duration) if common.HasField("duration") else 0.0
        return tcp_record(state.node_id, attributes, entry, duration)
