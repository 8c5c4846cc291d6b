"""Table tests of the AuthorizationPolicy builders (translate/authz.py).

Istio's semantics (istio.io AuthorizationPolicy): within a rule ``from``,
``to`` and ``when`` are ANDed, the entries of one list ORed, the fields of
one entry ANDed, the values of one field ORed. On a TCP port an ALLOW rule
that needs HTTP fields never matches, and a DENY rule ignores them. Every
row asserts the whole RBAC message, in protobuf's JSON mapping.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from sailplane.model.authz import AuthorizationPolicy, Condition, Operation, Rule, Source_
from sailplane.model.source import Position, Source
from sailplane.translate.authz import http_rbac_per_route, network_rbac_filters, rule_policy

SOURCE = Source("policy.yaml", Position(1, 1))
ANY_PERMISSION = [{"any": True}]
ANY_PRINCIPAL = [{"any": True}]


def _fields(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def _method(value: str) -> dict[str, Any]:
    return {"header": {"name": ":method", "string_match": {"exact": value}}}


RULES: list[tuple[str, Rule, bool, str, dict[str, Any] | None]] = [
    (
        "empty-rule-matches-everything",
        Rule(),
        True,
        "ALLOW",
        {"permissions": ANY_PERMISSION, "principals": ANY_PRINCIPAL},
    ),
    (
        "principal-and-namespace-are-anded",
        Rule(sources=(Source_(principals=("cluster.local/ns/a/sa/b",), namespaces=("x",)),)),
        True,
        "ALLOW",
        {
            "permissions": ANY_PERMISSION,
            "principals": [
                {
                    "and_ids": {
                        "ids": [
                            {
                                "authenticated": {
                                    "principal_name": {"exact": "spiffe://cluster.local/ns/a/sa/b"}
                                }
                            },
                            {
                                "authenticated": {
                                    "principal_name": {
                                        "safe_regex": {"regex": "spiffe://.+/ns/x/.+"}
                                    }
                                }
                            },
                        ]
                    }
                }
            ],
        },
    ),
    (
        "methods-ored-paths-glob",
        Rule(operations=(Operation(methods=("GET", "HEAD"), paths=("/api/*",)),)),
        True,
        "ALLOW",
        {
            "permissions": [
                {
                    "and_rules": {
                        "rules": [
                            {"or_rules": {"rules": [_method("GET"), _method("HEAD")]}},
                            {"url_path": {"path": {"prefix": "/api/"}}},
                        ]
                    }
                }
            ],
            "principals": ANY_PRINCIPAL,
        },
    ),
    (
        "host-with-or-without-port-and-not-paths",
        Rule(operations=(Operation(hosts=("api.example.com",), not_paths=("/admin*",)),)),
        True,
        "ALLOW",
        {
            "permissions": [
                {
                    "and_rules": {
                        "rules": [
                            {
                                "or_rules": {
                                    "rules": [
                                        {
                                            "header": {
                                                "name": ":authority",
                                                "string_match": {
                                                    "exact": "api.example.com",
                                                    "ignore_case": True,
                                                },
                                            }
                                        },
                                        {
                                            "header": {
                                                "name": ":authority",
                                                "string_match": {
                                                    "prefix": "api.example.com:",
                                                    "ignore_case": True,
                                                },
                                            }
                                        },
                                    ]
                                }
                            },
                            {"not_rule": {"url_path": {"path": {"prefix": "/admin"}}}},
                        ]
                    }
                }
            ],
            "principals": ANY_PRINCIPAL,
        },
    ),
    (
        "when-header-and-source-ip",
        Rule(
            conditions=(
                Condition("request.headers[X-User]", ("alice",)),
                Condition("source.ip", ("10.0.0.0/8",), ("10.1.0.0/16",)),
            )
        ),
        True,
        "ALLOW",
        {
            "permissions": [{"header": {"name": "x-user", "string_match": {"exact": "alice"}}}],
            "principals": [
                {
                    "and_ids": {
                        "ids": [
                            {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
                            {
                                "not_id": {
                                    "direct_remote_ip": {
                                        "address_prefix": "10.1.0.0",
                                        "prefix_len": 16,
                                    }
                                }
                            },
                        ]
                    }
                }
            ],
        },
    ),
    (
        "tcp-allow-needing-http-never-matches",
        Rule(operations=(Operation(methods=("GET",)),)),
        False,
        "ALLOW",
        None,
    ),
    (
        "tcp-deny-ignores-http-fields",
        Rule(operations=(Operation(methods=("GET",), ports=(80,)),)),
        False,
        "DENY",
        {"permissions": [{"destination_port": 80}], "principals": ANY_PRINCIPAL},
    ),
]


@pytest.mark.parametrize(
    ("rule", "http", "action", "expected"),
    [row[1:] for row in RULES],
    ids=[row[0] for row in RULES],
)
def test_rule_policy(rule: Rule, http: bool, action: str, expected: dict[str, Any] | None) -> None:
    policy = rule_policy(rule, http, action)
    assert (None if policy is None else _fields(policy)) == expected


def _policy(name: str, **fields: Any) -> AuthorizationPolicy:
    return AuthorizationPolicy(name, "ns", SOURCE, **fields)


def _per_route(rules: dict[str, Any]) -> dict[str, Any]:
    return {"rbac": {"rules": rules}}


PER_ROUTE: list[tuple[str, list[AuthorizationPolicy], bool, dict[str, Any]]] = [
    ("no-policy-no-filter-on", [], False, {}),
    (
        "strict-mtls-denies-plaintext-peers",
        [],
        True,
        {
            "envoy.filters.http.rbac.deny": _per_route(
                {
                    "action": "DENY",
                    "policies": {
                        "peer-authentication-strict": {
                            "permissions": ANY_PERMISSION,
                            "principals": [{"not_id": {"authenticated": {}}}],
                        }
                    },
                }
            )
        },
    ),
    (
        # ALLOW is the enum's zero value: omitted from the JSON.
        "allow-without-rules-denies-all",
        [_policy("deny-all")],
        False,
        {"envoy.filters.http.rbac.allow": _per_route({})},
    ),
    (
        "invalid-policy-fails-closed",
        [_policy("bad", fail_closed=True)],
        False,
        {
            "envoy.filters.http.rbac.deny": _per_route(
                {
                    "action": "DENY",
                    "policies": {
                        "ns[ns]-policy[bad]-invalid": {
                            "permissions": ANY_PERMISSION,
                            "principals": ANY_PRINCIPAL,
                        }
                    },
                }
            )
        },
    ),
    (
        "audit-logs",
        [_policy("log", action="AUDIT", rules=(Rule(),))],
        False,
        {
            "envoy.filters.http.rbac.audit": _per_route(
                {
                    "action": "LOG",
                    "policies": {
                        "ns[ns]-policy[log]-rule[0]": {
                            "permissions": ANY_PERMISSION,
                            "principals": ANY_PRINCIPAL,
                        }
                    },
                }
            )
        },
    ),
]


@pytest.mark.parametrize(
    ("policies", "require_mtls", "expected"),
    [row[1:] for row in PER_ROUTE],
    ids=[row[0] for row in PER_ROUTE],
)
def test_http_rbac_per_route(
    policies: list[AuthorizationPolicy], require_mtls: bool, expected: dict[str, Any]
) -> None:
    got = {}
    for filter_name, packed in http_rbac_per_route(policies, require_mtls).items():
        config = http_rbac_pb2.RBACPerRoute()
        assert packed.Unpack(config)
        got[filter_name] = _fields(config)
    assert got == expected


NETWORK: list[tuple[str, list[AuthorizationPolicy], list[dict[str, Any]]]] = [
    ("no-policy-no-filter", [], []),
    (
        "allow-needing-http-allows-nothing",
        [_policy("get-only", rules=(Rule(operations=(Operation(methods=("GET",)),)),))],
        [{"rules": {}, "stat_prefix": "inbound_5432.allow."}],
    ),
    (
        "deny-before-allow",
        [_policy("all"), _policy("none", action="DENY", rules=(Rule(),))],
        [
            {
                "rules": {
                    "action": "DENY",
                    "policies": {
                        "ns[ns]-policy[none]-rule[0]": {
                            "permissions": ANY_PERMISSION,
                            "principals": ANY_PRINCIPAL,
                        }
                    },
                },
                "stat_prefix": "inbound_5432.deny.",
            },
            {"rules": {}, "stat_prefix": "inbound_5432.allow."},
        ],
    ),
]


@pytest.mark.parametrize(
    ("policies", "expected"), [row[1:] for row in NETWORK], ids=[row[0] for row in NETWORK]
)
def test_network_rbac_filters(
    policies: list[AuthorizationPolicy], expected: list[dict[str, Any]]
) -> None:
    got = []
    for network_filter in network_rbac_filters(policies, "inbound_5432"):
        assert network_filter.name == "envoy.filters.network.rbac"
        config = network_rbac_pb2.RBAC()
        assert network_filter.typed_config.Unpack(config)
        got.append(_fields(config))
    assert got == expected
