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
* Envoy's file and OpenTelemetry access logs, and tracing: built in
  :mod:`sailplane.translate.telemetry_export`, put on the listeners here.
"""

from __future__ import annotations

import functools

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import (
    base_pb2,
    config_source_pb2,
)
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailplane.model.telemetry import WorkloadTelemetry
from sailplane.translate.common import duration, pack
from sailplane.translate.proxy import Proxy
from sailplane.translate.telemetry_export import file_log, grpc_service, http_tracing, otel_log

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


def als_cluster(proxy: Proxy) -> str:
    return str(proxy.metadata.get(META_TELEMETRY_CLUSTER, ALS_CLUSTER))


def _common_config(cluster: str, outbound: bool) -> als_pb2.CommonGrpcAccessLogConfig:
    return als_pb2.CommonGrpcAccessLogConfig(
        log_name=LOG_OUTBOUND if outbound else LOG_INBOUND,
        grpc_service=grpc_service(cluster),
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=duration(ALS_FLUSH_INTERVAL),
    )


# The builders below are cached: the same few messages go on every listener
# of every proxy (callers copy them in; nothing mutates them).
@functools.lru_cache(maxsize=64)
def _stream_log(
    cluster: str,
    outbound: bool,
    http: bool,
    request_headers: tuple[str, ...] = (),
    response_headers: tuple[str, ...] = (),
) -> accesslog_pb2.AccessLog:
    """``request_headers``, ``response_headers``: what Telemetry tag
    overrides read (``request.headers['x-user']``) besides our own."""
    if http:
        config = pack(
            als_pb2.HttpGrpcAccessLogConfig(
                common_config=_common_config(cluster, outbound),
                additional_request_headers_to_log=_headers(REQUEST_HEADERS_TO_LOG, request_headers),
                additional_response_headers_to_log=_headers(
                    RESPONSE_HEADERS_TO_LOG, response_headers
                ),
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


def access_logs(
    proxy: Proxy, plan: WorkloadTelemetry, outbound: bool, http: bool = True
) -> list[accesslog_pb2.AccessLog]:
    # Telemetry's filter gates the user's logs, never the stream below (the metrics).
    logs = [
        file_log(p, not http, plan.log_filter(p, outbound))
        for p, sides in plan.file_logs
        if sides.side(outbound)
    ]
    logs += [
        otel_log(p, not http, plan.log_filter(p, outbound))
        for p, sides in plan.otel_logs
        if sides.side(outbound)
    ]
    cluster = als_cluster(proxy)
    if cluster and plan.streams_to_sailplane(outbound):
        shape = plan.metric_shape(outbound)
        logs.append(
            _stream_log(
                cluster,
                outbound,
                http,
                shape.headers("request.headers"),
                shape.headers("response.headers"),
            )
        )
    return logs


def _headers(ours: tuple[str, ...], more: tuple[str, ...]) -> list[str]:
    return [*ours, *(h for h in more if h not in ours)]


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
