"""Table tests of the retry policy builder (translate/httproute.build_retry_policy).

Istio's semantics (istio.io VirtualService HTTPRetry, and pilot's
route/retry): no ``retries`` means 2 attempts on connection failures and
503s; ``attempts: 0`` turns retries off; ``retryOn`` may mix Envoy
conditions with status codes, which become ``retriable_status_codes``.
Every row asserts the whole RetryPolicy, in protobuf's JSON mapping.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from sailplane.model.networking import Destination, HTTPRoute, Retries, RouteDestination
from sailplane.translate.httproute import RouteContext, build_http_routes, build_retry_policy

DEFAULT_RETRY_ON = (
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,"
    "reset-before-request"
)
PREVIOUS_HOSTS = [
    {
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        },
    }
]


def _policy(num_retries: int, retry_on: str, **extra: Any) -> dict[str, Any]:
    return {
        "num_retries": num_retries,
        "retry_on": retry_on,
        "retry_host_predicate": PREVIOUS_HOSTS,
        "host_selection_retry_max_attempts": "5",  # int64: a string in JSON
        **extra,
    }


RETRIES: list[tuple[str, Retries | None, dict[str, Any] | None]] = [
    (
        "istio-default",
        None,
        _policy(2, DEFAULT_RETRY_ON, retriable_status_codes=[503]),
    ),
    ("attempts-0-turns-retries-off", Retries(attempts=0), None),
    (
        "attempts-only-keeps-default-conditions",
        Retries(attempts=5),
        _policy(5, DEFAULT_RETRY_ON, retriable_status_codes=[503]),
    ),
    (
        "per-try-timeout",
        Retries(attempts=3, per_try_timeout=2.5),
        _policy(3, DEFAULT_RETRY_ON, retriable_status_codes=[503], per_try_timeout="2.500s"),
    ),
    (
        "conditions-only",
        Retries(attempts=3, retry_on="5xx,gateway-error"),
        _policy(3, "5xx,gateway-error"),
    ),
    (
        "status-code-adds-retriable-status-codes",
        Retries(attempts=2, retry_on="503,connect-failure"),
        _policy(2, "connect-failure,retriable-status-codes", retriable_status_codes=[503]),
    ),
    (
        "status-codes-with-explicit-condition",
        Retries(attempts=2, retry_on="retriable-status-codes, 502 ,504"),
        _policy(2, "retriable-status-codes", retriable_status_codes=[502, 504]),
    ),
    (
        "empty-items-ignored",
        Retries(attempts=1, retry_on="reset,,refused-stream"),
        _policy(1, "reset,refused-stream"),
    ),
    (
        "retry-previous-hosts-allowed",
        Retries(attempts=2, retry_on="5xx", ignore_previous_hosts=False),
        {k: v for k, v in _policy(2, "5xx").items() if k != "retry_host_predicate"},
    ),
    (
        "retry-remote-localities",
        Retries(attempts=2, retry_on="5xx", remote_localities=True),
        _policy(
            2,
            "5xx",
            retry_priority={
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority"
                    ".previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 2,
                },
            },
        ),
    ),
    (
        "backoff-base-interval",
        Retries(attempts=2, retry_on="5xx", backoff=0.1),
        _policy(2, "5xx", retry_back_off={"base_interval": "0.100s"}),
    ),
]


@pytest.mark.parametrize(
    ("retries", "expected"),
    [(r, e) for _, r, e in RETRIES],
    ids=[name for name, _, _ in RETRIES],
)
def test_retry_policy(retries: Retries | None, expected: dict[str, Any] | None) -> None:
    policy = build_retry_policy(retries)
    if expected is None:
        assert policy is None
        return
    assert policy is not None
    assert json_format.MessageToDict(policy, preserving_proto_field_name=True) == expected


ROUTE_CONTEXT = RouteContext(
    cluster_for=lambda d: f"outbound|80||{d.host}", hash_policy_for=lambda d: []
)


@pytest.mark.parametrize(
    ("retries", "has_policy"),
    [(None, True), (Retries(attempts=0), False), (Retries(attempts=4), True)],
    ids=["default-on-the-route", "off-leaves-no-policy", "set-on-the-route"],
)
def test_routes_carry_the_policy(retries: Retries | None, has_policy: bool) -> None:
    route = HTTPRoute(route=(RouteDestination(Destination("backend")),), retries=retries)
    (envoy_route,) = build_http_routes(route, [None], ROUTE_CONTEXT, "default")
    assert envoy_route.route.HasField("retry_policy") is has_policy
    if has_policy:
        assert envoy_route.route.retry_policy == build_retry_policy(retries)
