"""Telemetry on the proxies' listeners: access logs, the access log stream to
sailplane (Istio's standard metrics are computed from it), tracing, and the
peer exchange that lets each side name the other.

* Every HTTP connection manager and TCP proxy streams one entry per request
  (per connection, for TCP) to sailplane over gRPC
  (``envoy.service.accesslog.v3.AccessLogService``) on the bootstrap's
  ``xds-grpc`` cluster: the same connection and port as ADS, mTLS included.
  Log names say the side: ``sailplane.outbound`` (reporter=source) and
  ``sailplane.inbound`` (reporter=destination). Envoy sends the node in the
  first message of each stream, so every entry is attributed to its proxy.
* Peer exchange, as Istio's metadata exchange: a sidecar's outbound requests
  carry ``x-envoy-peer-metadata-id: <node id>`` and its inbound responses do
  too; the receiving side moves the header into dynamic metadata
  (``sailplane.downstream_peer`` / ``sailplane.upstream_peer``), removing it,
  so the apps never see it and the log entry carries it.
* Envoy's file access log, per provider, in Istio's default text or JSON format.
* Tracing (OpenTelemetry over OTLP/gRPC, or Zipkin), with a cluster per
  provider added to the proxy's own clusters.
"""

from __future__ import annotations

import functools
import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import (
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as accesslog_data_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2

from sailplane.model.hosts import is_ip_address
from sailplane.model.registry import Endpoint, Protocol, ServicePort
from sailplane.model.sidecar import Provider
from sailplane.model.telemetry import TracingPlan, WorkloadTelemetry
from sailplane.translate.common import duration, pack
from sailplane.translate.endpoints import build_load_assignment
from sailplane.translate.proxy import Proxy

# The bootstrap's static cluster to sailplane (bootstrap.XDS_CLUSTER, Istio's
# name too). A proxy with another bootstrap names its own in node metadata
# (META_TELEMETRY_CLUSTER); an empty value turns the stream off.
ALS_CLUSTER = "xds-grpc"
META_TELEMETRY_CLUSTER = "sailplane.telemetry_cluster"
LOG_OUTBOUND = "sailplane.outbound"
LOG_INBOUND = "sailplane.inbound"
# Envoy batches entries and sends them at least this often: metrics lag
# requests by about this much.
ALS_FLUSH_INTERVAL = 0.5

PEER_HEADER = "x-envoy-peer-metadata-id"
METADATA_NAMESPACE = "sailplane"
DOWNSTREAM_PEER = "downstream_peer"
UPSTREAM_PEER = "upstream_peer"
# Logged with every entry: the protocol (gRPC or HTTP) and gRPC's status.
REQUEST_HEADERS_TO_LOG = ("content-type",)
RESPONSE_HEADERS_TO_LOG = ("grpc-status",)

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
_DEFAULT_PORTS = {"opentelemetry": 4317, "zipkin": 9411}


def als_cluster(proxy: Proxy) -> str:
    return str(proxy.metadata.get(META_TELEMETRY_CLUSTER, ALS_CLUSTER))


def _grpc_service(cluster: str) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
    )


def _common_config(cluster: str, outbound: bool) -> als_pb2.CommonGrpcAccessLogConfig:
    return als_pb2.CommonGrpcAccessLogConfig(
        log_name=LOG_OUTBOUND if outbound else LOG_INBOUND,
        grpc_service=_grpc_service(cluster),
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=duration(ALS_FLUSH_INTERVAL),
    )


# The builders below are cached: the same few messages go on every listener
# of every proxy (callers copy them in; nothing mutates them).
@functools.lru_cache(maxsize=64)
def _stream_log(cluster: str, outbound: bool, http: bool) -> accesslog_pb2.AccessLog:
    if http:
        config = pack(
            als_pb2.HttpGrpcAccessLogConfig(
                common_config=_common_config(cluster, outbound),
                additional_request_headers_to_log=REQUEST_HEADERS_TO_LOG,
                additional_response_headers_to_log=RESPONSE_HEADERS_TO_LOG,
                additional_response_trailers_to_log=RESPONSE_HEADERS_TO_LOG,
            )
        )
        name = "envoy.access_loggers.http_grpc"
    else:
        config = pack(
            als_pb2.TcpGrpcAccessLogConfig(common_config=_common_config(cluster, outbound))
        )
        name = "envoy.access_loggers.tcp_grpc"
    return accesslog_pb2.AccessLog(name=name, typed_config=config)


@functools.lru_cache(maxsize=64)
def _file_log(provider: Provider, tcp: bool) -> accesslog_pb2.AccessLog:
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
    if tcp:
        # One line per connection, at its end (not at connect or each flush).
        access_log.filter.log_type_filter.types.append(accesslog_data_pb2.TcpConnectionEnd)
    return access_log


def access_logs(
    proxy: Proxy, plan: WorkloadTelemetry, outbound: bool, http: bool = True
) -> list[accesslog_pb2.AccessLog]:
    logs = [_file_log(p, not http) for p, sides in plan.file_logs if sides.side(outbound)]
    cluster = als_cluster(proxy)
    if cluster and plan.streams_to_sailplane(outbound):
        logs.append(_stream_log(cluster, outbound, http))
    return logs


@functools.lru_cache(maxsize=4096)
def peer_filters(node_id: str, outbound: bool) -> tuple[hcm_pb2.HttpFilter, ...]:
    """Name this proxy to the other side, and take the other side's name
    (see the module docstring). Outbound: send ours on requests, take theirs
    from responses; inbound the other way round."""
    rule = header_to_metadata_pb2.Config.Rule(
        header=PEER_HEADER,
        on_header_present=header_to_metadata_pb2.Config.KeyValuePair(
            metadata_namespace=METADATA_NAMESPACE,
            key=UPSTREAM_PEER if outbound else DOWNSTREAM_PEER,
            type=header_to_metadata_pb2.Config.STRING,
        ),
        remove=True,
    )
    take = header_to_metadata_pb2.Config()
    (take.response_rules if outbound else take.request_rules).append(rule)
    ours = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=PEER_HEADER, value=node_id),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    mutations = header_mutation_pb2.Mutations()
    (mutations.request_mutations if outbound else mutations.response_mutations).append(
        mutation_rules_pb2.HeaderMutation(append=ours)
    )
    return (
        hcm_pb2.HttpFilter(name="sailplane.peer.take", typed_config=pack(take)),
        hcm_pb2.HttpFilter(
            name="sailplane.peer.send",
            typed_config=pack(header_mutation_pb2.HeaderMutation(mutations=mutations)),
        ),
    )


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
                    grpc_service=_grpc_service(cluster), service_name=service
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
        random_sampling=percent_pb2.Percent(value=plan.sampling), provider=http
    )


def tracing_clusters(plan: WorkloadTelemetry) -> list[cluster_pb2.Cluster]:
    """The collector of the proxy's tracing provider, as a cluster of its own."""
    if plan.tracing is None:
        return []
    provider = plan.tracing.provider
    host, port = _collector(provider)
    name = tracing_cluster_name(provider)
    kind = cluster_pb2.Cluster.STATIC if is_ip_address(host) else cluster_pb2.Cluster.STRICT_DNS
    cluster = cluster_pb2.Cluster(name=name, type=kind, connect_timeout=duration(1))
    cluster.load_assignment.CopyFrom(
        build_load_assignment(
            name, ServicePort(port, "", Protocol.UNKNOWN), (Endpoint(address=host),)
        )
    )
    if provider.kind == "opentelemetry":  # OTLP/gRPC needs HTTP/2
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(pack(options))
    return [cluster]


def decorate_http(
    manager: hcm_pb2.HttpConnectionManager,
    proxy: Proxy,
    plan: WorkloadTelemetry | None,
    outbound: bool,
) -> None:
    """Add the proxy's telemetry to one of its HTTP connection managers."""
    if plan is None:
        return
    manager.access_log.extend(access_logs(proxy, plan, outbound))
    if als_cluster(proxy):  # the other side's telemetry needs it, whatever ours is
        filters = [*peer_filters(proxy.id, outbound), *manager.http_filters]
        del manager.http_filters[:]
        manager.http_filters.extend(filters)
    if plan.tracing is not None and plan.tracing.directions.side(outbound):
        manager.tracing.CopyFrom(http_tracing(proxy, plan.tracing))


def decorate_tcp(
    tcp: tcp_proxy_pb2.TcpProxy, proxy: Proxy, plan: WorkloadTelemetry | None, outbound: bool
) -> None:
    """Add the proxy's telemetry to one of its TCP proxies: a log entry when
    the connection is up (opened), every reporting interval (bytes so far)
    and at its end (closed)."""
    if plan is None:
        return
    logs = access_logs(proxy, plan, outbound, http=False)
    if not logs:
        return
    tcp.access_log.extend(logs)
    tcp.access_log_options.flush_access_log_on_connected = True
    tcp.access_log_options.access_log_flush_interval.CopyFrom(duration(plan.reporting_interval))
