"""Telemetry the proxies send elsewhere than sailplane: Envoy's file access
logs and OpenTelemetry access logs (in Istio's formats), tracing (OpenTelemetry
over OTLP/gRPC, or Zipkin) with Istio's custom tags, and a cluster per
collector added to the proxy's own clusters."""

from __future__ import annotations

import functools
import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as accesslog_data_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from opentelemetry.proto.common.v1 import common_pb2

from sailplane.model.hosts import is_ip_address
from sailplane.model.registry import Endpoint, Protocol, ServicePort
from sailplane.model.sidecar import Provider
from sailplane.model.telemetry import CustomTag, TracingPlan, WorkloadTelemetry
from sailplane.translate.common import duration, pack
from sailplane.translate.endpoints import build_load_assignment
from sailplane.translate.proxy import Proxy

# Istio's default access log format (pilot/pkg/model/telemetry_logging.go).
ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
ISTIO_JSON_FORMAT = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "peer_principal": "%DOWNSTREAM_PEER_URI_SAN%",
}
_DEFAULT_PORTS = {"opentelemetry": 4317, "envoyOtelAls": 4317, "zipkin": 9411}


def grpc_service(cluster: str) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
    )


CEL_FILTER = "envoy.access_loggers.extension_filters.cel"  # Istio's celFilter


def _filter(access_log: accesslog_pb2.AccessLog, tcp: bool, expression: str) -> None:
    """TCP: one line per connection, at its end (not at connect or each
    flush). ``expression``: Telemetry's ``accessLogging[].filter``, as Istio's
    buildAccessLogFilterFromTelemetry (pilot/pkg/networking/core/accesslog.go);
    with both, an and_filter as Istio's buildAccessLogFilter."""
    filters = []
    if tcp:
        ends = accesslog_pb2.AccessLogFilter()
        ends.log_type_filter.types.append(accesslog_data_pb2.TcpConnectionEnd)
        filters.append(ends)
    if expression:
        cel = accesslog_pb2.AccessLogFilter()
        cel.extension_filter.name = CEL_FILTER
        cel.extension_filter.typed_config.CopyFrom(
            pack(cel_pb2.ExpressionFilter(expression=expression))
        )
        filters.append(cel)
    if len(filters) == 1:
        access_log.filter.CopyFrom(filters[0])
    elif filters:
        access_log.filter.and_filter.filters.extend(filters)


@functools.lru_cache(maxsize=64)
def file_log(provider: Provider, tcp: bool, expression: str = "") -> accesslog_pb2.AccessLog:
    log_format = substitution_format_string_pb2.SubstitutionFormatString()
    if provider.encoding == "JSON":
        labels: object = ISTIO_JSON_FORMAT
        if provider.format:
            try:
                labels = json.loads(provider.format)
            except ValueError:
                labels = ISTIO_JSON_FORMAT
        log_format.json_format.update(labels if isinstance(labels, dict) else ISTIO_JSON_FORMAT)
    else:
        text = provider.format or ISTIO_TEXT_FORMAT
        log_format.text_format_source.inline_string = text if text.endswith("\n") else text + "\n"
    access_log = accesslog_pb2.AccessLog(
        name="envoy.access_loggers.file",
        typed_config=pack(
            file_pb2.FileAccessLog(path=provider.path or "/dev/stdout", log_format=log_format)
        ),
    )
    _filter(access_log, tcp, expression)
    return access_log


OTEL_LOG_NAME = "otel_envoy_accesslog"  # Istio's default logName


def otel_log_cluster_name(provider: Provider) -> str:
    return f"accesslog|{provider.name}"


@functools.lru_cache(maxsize=64)
def otel_log(provider: Provider, tcp: bool, expression: str = "") -> accesslog_pb2.AccessLog:
    """An envoyOtelAls provider, as Istio's openTelemetryLog
    (pilot/pkg/model/telemetry_logging.go): OTLP/gRPC to the provider's
    service, Istio's text format as the body, ``logFormat.labels`` as attributes."""
    host, _ = _collector(provider)
    config = logs_service_pb2.OpenTelemetryAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=provider.log_name or OTEL_LOG_NAME,
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                    cluster_name=otel_log_cluster_name(provider), authority=host
                )
            ),
            transport_api_version=config_source_pb2.V3,
        ),
        disable_builtin_labels=True,
        body=common_pb2.AnyValue(string_value=provider.format or ISTIO_TEXT_FORMAT),
    )
    for key, value in provider.labels:
        config.attributes.values.add(key=key, value=common_pb2.AnyValue(string_value=value))
    access_log = accesslog_pb2.AccessLog(
        name="envoy.access_loggers.open_telemetry", typed_config=pack(config)
    )
    _filter(access_log, tcp, expression)
    return access_log


def tracing_cluster_name(provider: Provider) -> str:
    return f"tracing|{provider.name}"


def _collector(provider: Provider) -> tuple[str, int]:
    host = provider.service.rpartition("/")[2]  # Istio allows "namespace/host"
    return host, provider.port or _DEFAULT_PORTS.get(provider.kind, 0)


def service_name(proxy: Proxy) -> str:
    """The tracing service name, as Istio's: ``app.namespace``."""
    labels = proxy.workload.labels
    app = labels.get("service.istio.io/canonical-name") or labels.get("app") or proxy.workload.name
    return f"{app}.{proxy.namespace}"


def http_tracing(proxy: Proxy, plan: TracingPlan) -> hcm_pb2.HttpConnectionManager.Tracing:
    return _tracing(service_name(proxy), plan)


@functools.lru_cache(maxsize=1024)
def _tracing(service: str, plan: TracingPlan) -> hcm_pb2.HttpConnectionManager.Tracing:
    provider = plan.provider
    cluster = tracing_cluster_name(provider)
    if provider.kind == "opentelemetry":
        http = http_tracer_pb2.Tracing.Http(
            name="envoy.tracers.opentelemetry",
            typed_config=pack(
                opentelemetry_pb2.OpenTelemetryConfig(
                    grpc_service=grpc_service(cluster), service_name=service
                )
            ),
        )
    else:
        host, _ = _collector(provider)
        http = http_tracer_pb2.Tracing.Http(
            name="envoy.tracers.zipkin",
            typed_config=pack(
                zipkin_pb2.ZipkinConfig(
                    collector_cluster=cluster,
                    collector_endpoint="/api/v2/spans",
                    collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
                    collector_hostname=host,
                    trace_id_128bit=True,
                    shared_span_context={"value": False},
                )
            ),
        )
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=plan.sampling),
        provider=http,
        custom_tags=[_custom_tag(t) for t in plan.custom_tags],
    )


def _custom_tag(tag: CustomTag) -> custom_tag_pb2.CustomTag:
    """As Istio's buildCustomTagsFromProvider (pilot/pkg/networking/core/tracing.go)."""
    out = custom_tag_pb2.CustomTag(tag=tag.name)
    if tag.source == "literal":
        out.literal.value = tag.value
    elif tag.source == "environment":
        out.environment.name, out.environment.default_value = tag.value, tag.default
    elif tag.source == "header":
        out.request_header.name, out.request_header.default_value = tag.value, tag.default
    else:
        out.value = tag.value
    return out


def telemetry_clusters(plan: WorkloadTelemetry) -> list[cluster_pb2.Cluster]:
    """The collectors of the proxy's tracing and OpenTelemetry access log
    providers, each as a cluster of its own."""
    clusters = [_collector_cluster(p, otel_log_cluster_name(p)) for p, _ in plan.otel_logs]
    if plan.tracing is not None:
        provider = plan.tracing.provider
        clusters.append(_collector_cluster(provider, tracing_cluster_name(provider)))
    return clusters


def _collector_cluster(provider: Provider, name: str) -> cluster_pb2.Cluster:
    host, port = _collector(provider)
    kind = cluster_pb2.Cluster.STATIC if is_ip_address(host) else cluster_pb2.Cluster.STRICT_DNS
    cluster = cluster_pb2.Cluster(name=name, type=kind, connect_timeout=duration(1))
    cluster.load_assignment.CopyFrom(
        build_load_assignment(
            name, ServicePort(port, "", Protocol.UNKNOWN), (Endpoint(address=host),)
        )
    )
    if provider.kind in ("opentelemetry", "envoyOtelAls"):  # OTLP/gRPC needs HTTP/2
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(pack(options))
    return cluster
