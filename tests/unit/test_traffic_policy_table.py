"""Table tests of the DestinationRule traffic policy builder
(translate/policy.apply_traffic_policy) on an outbound EDS cluster.

Istio's defaults: circuit breakers effectively unlimited unless a
connectionPool says otherwise; outlier detection enforces only the detectors
configured, turns success-rate ejection off, and sets the panic threshold to
``minHealthPercent`` (0 unless given). Every row asserts the whole cluster,
in protobuf's JSON mapping.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import json_format

from sailplane.model.networking import (
    ConnectionPool,
    ConsistentHash,
    LoadBalancer,
    OutlierDetection,
    TrafficPolicy,
)
from sailplane.translate.common import ads_config_source
from sailplane.translate.policy import apply_traffic_policy

UNLIMITED = 4294967295


def _thresholds(**limits: int) -> dict[str, Any]:
    threshold = {
        "max_connections": UNLIMITED,
        "max_pending_requests": UNLIMITED,
        "max_requests": UNLIMITED,
        "max_retries": UNLIMITED,
        **limits,
        "track_remaining": True,
    }
    return {"thresholds": [threshold]}


def _cluster(**fields: Any) -> dict[str, Any]:
    """The base cluster's fields, changed by ``fields`` (None: absent)."""
    base = {
        "name": "outbound|80||backend.default.svc.cluster.local",
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
        "circuit_breakers": _thresholds(),
    }
    merged = {**base, **fields}
    return {k: v for k, v in merged.items() if v is not None}


POLICIES: list[tuple[str, TrafficPolicy, dict[str, Any]]] = [
    ("nothing-set-unlimited-breakers", TrafficPolicy(), _cluster()),
    (
        "least-request",
        TrafficPolicy(load_balancer=LoadBalancer(simple="LEAST_REQUEST")),
        _cluster(lb_policy="LEAST_REQUEST"),
    ),
    (
        "consistent-hash-ring-size",
        TrafficPolicy(
            load_balancer=LoadBalancer(
                consistent_hash=ConsistentHash(header="x-user", minimum_ring_size=1024)
            )
        ),
        # The hash key itself goes on the route (RouteAction.hash_policy), not here.
        _cluster(lb_policy="RING_HASH", ring_hash_lb_config={"minimum_ring_size": "1024"}),
    ),
    (
        "passthrough-connects-to-the-original-destination",
        TrafficPolicy(load_balancer=LoadBalancer(simple="PASSTHROUGH")),
        _cluster(type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED", eds_cluster_config=None),
    ),
    (
        "connection-pool",
        TrafficPolicy(
            connection_pool=ConnectionPool(
                max_connections=100,
                connect_timeout=0.25,
                http1_max_pending_requests=1,
                http2_max_requests=50,
                max_retries=3,
                max_requests_per_connection=10,
                idle_timeout=30,
            )
        ),
        _cluster(
            connect_timeout="0.250s",
            circuit_breakers=_thresholds(
                max_connections=100, max_pending_requests=1, max_requests=50, max_retries=3
            ),
            typed_extension_protocol_options={
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {
                        "idle_timeout": "30s",
                        "max_requests_per_connection": 10,
                    },
                    "explicit_http_config": {"http_protocol_options": {}},
                }
            },
        ),
    ),
    (
        "outlier-detection-enforces-what-is-configured",
        TrafficPolicy(
            outlier_detection=OutlierDetection(
                consecutive_gateway_errors=2,
                interval=1,
                base_ejection_time=30,
                max_ejection_percent=50,
            )
        ),
        _cluster(
            outlier_detection={
                "consecutive_gateway_failure": 2,
                "enforcing_consecutive_gateway_failure": 100,
                "enforcing_consecutive_5xx": 0,
                "enforcing_success_rate": 0,
                "interval": "1s",
                "base_ejection_time": "30s",
                "max_ejection_percent": 50,
            },
            common_lb_config={"healthy_panic_threshold": {}},  # 0 %: panic mode off
        ),
    ),
    (
        "outlier-detection-zero-errors-off-min-health-kept",
        TrafficPolicy(
            outlier_detection=OutlierDetection(consecutive_5xx_errors=0, min_health_percent=20)
        ),
        _cluster(
            outlier_detection={
                "consecutive_5xx": 0,
                "enforcing_consecutive_5xx": 0,
                "enforcing_success_rate": 0,
            },
            common_lb_config={"healthy_panic_threshold": {"value": 20.0}},
        ),
    ),
]


@pytest.mark.parametrize(
    ("policy", "expected"), [row[1:] for row in POLICIES], ids=[row[0] for row in POLICIES]
)
def test_traffic_policy(policy: TrafficPolicy, expected: dict[str, Any]) -> None:
    cluster = cluster_pb2.Cluster(
        name="outbound|80||backend.default.svc.cluster.local", type=cluster_pb2.Cluster.EDS
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    apply_traffic_policy(cluster, policy)
    assert json_format.MessageToDict(cluster, preserving_proto_field_name=True) == expected
