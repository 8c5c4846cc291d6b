"""Table tests of the fault injection builder (translate/httproute.build_fault).

A VirtualService ``fault`` becomes the route's ``typed_per_filter_config``
for ``envoy.filters.http.fault``. Istio's percentages (0-100, fractions
allowed) become parts per million, so 0.1 % is not rounded away. Every row
asserts the whole HTTPFault, in protobuf's JSON mapping.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import json_format

from sailplane.model.networking import (
    Destination,
    Fault,
    FaultAbort,
    FaultDelay,
    HTTPRoute,
    RouteDestination,
)
from sailplane.translate.httproute import FAULT_FILTER, RouteContext, build_fault, build_http_routes


def _per_million(numerator: int) -> dict[str, Any]:
    return {"numerator": numerator, "denominator": "MILLION"}


FAULTS: list[tuple[str, Fault, dict[str, Any]]] = [
    ("nothing", Fault(), {}),
    (
        "delay-every-request",
        Fault(delay=FaultDelay(fixed_delay=5)),
        {"delay": {"fixed_delay": "5s", "percentage": _per_million(1_000_000)}},
    ),
    (
        "delay-some-requests",
        Fault(delay=FaultDelay(fixed_delay=0.25, percentage=10)),
        {"delay": {"fixed_delay": "0.250s", "percentage": _per_million(100_000)}},
    ),
    (
        "abort-fraction-of-a-percent",
        Fault(abort=FaultAbort(http_status=503, percentage=0.1)),
        {"abort": {"http_status": 503, "percentage": _per_million(1_000)}},
    ),
    (
        "delay-and-abort",
        Fault(
            delay=FaultDelay(fixed_delay=2, percentage=50),
            abort=FaultAbort(http_status=418, percentage=25),
        ),
        {
            "delay": {"fixed_delay": "2s", "percentage": _per_million(500_000)},
            "abort": {"http_status": 418, "percentage": _per_million(250_000)},
        },
    ),
    (
        "zero-percent-is-kept",
        Fault(abort=FaultAbort(http_status=500, percentage=0)),
        {"abort": {"http_status": 500, "percentage": {"denominator": "MILLION"}}},
    ),
]


@pytest.mark.parametrize(
    ("fault", "expected"), [(f, e) for _, f, e in FAULTS], ids=[name for name, _, _ in FAULTS]
)
def test_fault(fault: Fault, expected: dict[str, Any]) -> None:
    assert (
        json_format.MessageToDict(build_fault(fault), preserving_proto_field_name=True) == expected
    )


@pytest.mark.parametrize(
    "fault", [None, Fault(abort=FaultAbort(http_status=503))], ids=["no-fault", "fault"]
)
def test_the_route_carries_the_fault(fault: Fault | None) -> None:
    route = HTTPRoute(route=(RouteDestination(Destination("backend")),), fault=fault)
    context = RouteContext(cluster_for=lambda d: d.host, hash_policy_for=lambda d: [])
    (envoy_route,) = build_http_routes(route, [None], context, "default")
    configs = envoy_route.typed_per_filter_config
    if fault is None:
        assert FAULT_FILTER not in configs
        return
    unpacked = fault_pb2.HTTPFault()
    assert configs[FAULT_FILTER].Unpack(unpacked)
    assert unpacked == build_fault(fault)
