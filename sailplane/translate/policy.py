"""DestinationRule traffic policies applied to clusters.

Field semantics follow istio.io/latest/docs/reference/config/networking/
destination-rule; defaults follow Istio's (circuit breaker thresholds are
effectively unlimited unless a connectionPool says otherwise, so Envoy's own
default of 1024 never surprises anyone).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2

from sailplane.model.networking import ConnectionPool, OutlierDetection, TrafficPolicy
from sailplane.translate.common import duration, pack

UNLIMITED = 4294967295
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_SIMPLE_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}


def http_options(cluster: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    """The cluster's HttpProtocolOptions (unpacked; write back with set_http_options)."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if HTTP_OPTIONS_KEY in cluster.typed_extension_protocol_options:
        cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(options)
    return options


def set_http_options(
    cluster: cluster_pb2.Cluster, options: http_protocol_options_pb2.HttpProtocolOptions
) -> None:
    if not options.HasField("explicit_http_config") and not options.HasField(
        "use_downstream_protocol_config"
    ):
        options.explicit_http_config.http_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(options))


def circuit_breakers(pool: ConnectionPool | None) -> circuit_breaker_pb2.CircuitBreakers:
    pool = pool or ConnectionPool()

    def limit(value: int | None) -> dict[str, int]:
        return {"value": UNLIMITED if value is None else value}

    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=limit(pool.max_connections),
        max_pending_requests=limit(pool.http1_max_pending_requests),
        max_requests=limit(pool.http2_max_requests),
        max_retries=limit(pool.max_retries),
        track_remaining=True,
    )
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])


def outlier_detection(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    """Istio enforces only the detectors the user configured (100%), and turns
    success-rate ejection off."""
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate={"value": 0})
    if od.consecutive_5xx_errors is not None:
        out.consecutive_5xx.value = od.consecutive_5xx_errors
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors > 0 else 0
    else:
        out.enforcing_consecutive_5xx.value = 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = (
            100 if od.consecutive_gateway_errors > 0 else 0
        )
    if od.interval is not None:
        out.interval.CopyFrom(duration(od.interval))
    if od.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(od.base_ejection_time))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    return out


def apply_traffic_policy(cluster: cluster_pb2.Cluster, policy: TrafficPolicy) -> None:
    """Set load balancing, circuit breakers and outlier detection on ``cluster``."""
    lb = policy.load_balancer
    if lb is not None:
        if lb.consistent_hash is not None:
            cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
            if lb.consistent_hash.minimum_ring_size:
                cluster.ring_hash_lb_config.minimum_ring_size.value = (
                    lb.consistent_hash.minimum_ring_size
                )
        elif lb.simple == "PASSTHROUGH":
            # Istio: connect to the address the caller asked for.
            cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
            cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
            cluster.ClearField("eds_cluster_config")
            cluster.ClearField("load_assignment")
        elif lb.simple in _SIMPLE_LB:
            cluster.lb_policy = _SIMPLE_LB[lb.simple]
    pool = policy.connection_pool
    cluster.circuit_breakers.CopyFrom(circuit_breakers(pool))
    if pool is not None:
        if pool.connect_timeout is not None:
            cluster.connect_timeout.CopyFrom(duration(pool.connect_timeout))
        if pool.max_requests_per_connection is not None or pool.idle_timeout is not None:
            options = http_options(cluster)
            common = options.common_http_protocol_options
            if pool.max_requests_per_connection:
                common.max_requests_per_connection.value = pool.max_requests_per_connection
            if pool.idle_timeout is not None:
                common.idle_timeout.CopyFrom(duration(pool.idle_timeout))
            set_http_options(cluster, options)
    od = policy.outlier_detection
    if od is not None:
        cluster.outlier_detection.CopyFrom(outlier_detection(od))
        # Istio sets Envoy's healthy_panic_threshold to minHealthPercent, which
        # defaults to 0: with outlier detection on, panic mode is off unless asked
        # for, so ejected hosts stay out even when most are ejected (Envoy's own
        # default of 50% would spread traffic over every host again).
        cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
            percent_pb2.Percent(value=float(od.min_health_percent or 0))
        )
