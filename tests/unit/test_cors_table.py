"""Table tests of the CORS builder (translate/httproute.build_cors).

A VirtualService ``corsPolicy`` becomes the route's ``typed_per_filter_config``
for ``envoy.filters.http.cors`` (the filter itself sits idle in every
outbound HTTP connection manager). Every row asserts the whole CorsPolicy,
in protobuf's JSON mapping.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from google.protobuf import json_format

from sailplane.model.networking import (
    CorsPolicy,
    Destination,
    HTTPRoute,
    RouteDestination,
    StringMatch,
)
from sailplane.translate.httproute import CORS_FILTER, RouteContext, build_cors, build_http_routes

CORS: list[tuple[str, CorsPolicy, dict[str, Any]]] = [
    ("empty", CorsPolicy(), {}),
    (
        "exact-origin-and-lists",
        CorsPolicy(
            allow_origins=(StringMatch("exact", "https://weather.example.com"),),
            allow_methods=("GET", "POST"),
            allow_headers=("content-type", "x-user"),
            expose_headers=("x-request-id",),
        ),
        {
            "allow_origin_string_match": [{"exact": "https://weather.example.com"}],
            "allow_methods": "GET,POST",
            "allow_headers": "content-type,x-user",
            "expose_headers": "x-request-id",
        },
    ),
    (
        "prefix-and-regex-origins",
        CorsPolicy(
            allow_origins=(
                StringMatch("prefix", "https://"),
                StringMatch("regex", r"https://.*\.example\.com"),
            )
        ),
        {
            "allow_origin_string_match": [
                {"prefix": "https://"},
                {"safe_regex": {"regex": r"https://.*\.example\.com"}},
            ]
        },
    ),
    ("max-age-in-whole-seconds", CorsPolicy(max_age=86400.9), {"max_age": "86400"}),
    ("credentials-allowed", CorsPolicy(allow_credentials=True), {"allow_credentials": True}),
    # An explicit false is written (a BoolValue set to false), not left unset.
    ("credentials-refused", CorsPolicy(allow_credentials=False), {"allow_credentials": False}),
]


@pytest.mark.parametrize(
    ("cors", "expected"), [(c, e) for _, c, e in CORS], ids=[name for name, _, _ in CORS]
)
def test_cors_policy(cors: CorsPolicy, expected: dict[str, Any]) -> None:
    assert json_format.MessageToDict(build_cors(cors), preserving_proto_field_name=True) == expected


@pytest.mark.parametrize(
    "cors", [None, CorsPolicy(allow_methods=("GET",))], ids=["no-policy", "policy"]
)
def test_the_route_carries_the_policy(cors: CorsPolicy | None) -> None:
    route = HTTPRoute(route=(RouteDestination(Destination("backend")),), cors=cors)
    context = RouteContext(cluster_for=lambda d: d.host, hash_policy_for=lambda d: [])
    (envoy_route,) = build_http_routes(route, [None], context, "default")
    configs = envoy_route.typed_per_filter_config
    if cors is None:
        assert CORS_FILTER not in configs
        return
    unpacked = cors_pb2.CorsPolicy()
    assert configs[CORS_FILTER].Unpack(unpacked)
    assert unpacked == build_cors(cors)
