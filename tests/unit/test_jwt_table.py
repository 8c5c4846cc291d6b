"""Table tests of RequestAuthentication and the JWT parts of
AuthorizationPolicy: parsing (config/requestauthn.py, config/authorization.py)
and translation (translate/jwt.py, translate/authz.py), against Istio's
builders (pilot/pkg/security/authn/policy_applier.go, authz/model/generator.go,
authz/builder/builder.go). Every row asserts the whole message, in
protobuf's JSON mapping."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from sailplane.config.loader import LoadResult, load_texts
from sailplane.model.authz import AuthorizationPolicy, Condition, Operation, Rule, Source_
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.model.security import JwtHeader, JwtRule, RequestAuthentication
from sailplane.model.source import Position, Severity, Source
from sailplane.translate.authz import (
    http_rbac_per_route,
    network_rbac_filters,
    policies_for,
    rule_policy,
)
from sailplane.translate.jwt import (
    PUBLIC_ONLY_JWKS,
    jwt_authentication,
    request_authentications_for,
)

SOURCE = Source("policy.yaml", Position(1, 1))
JWKS = '{"keys":[{"kty":"RSA","e":"AQAB","n":"abc"}]}'
ANY = [{"any": True}]


def _fields(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def _provider(issuer: str, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "local_jwks": {"inline_string": JWKS},
        "payload_in_metadata": "payload",
        "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
        **extra,
    }


def _either(name: str) -> dict[str, Any]:
    return {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}


def _config(requires: dict[str, Any], providers: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        "bypass_cors_preflight": True,
    }


JWT_ROWS: list[tuple[str, list[JwtRule], dict[str, Any]]] = [
    (
        "one-issuer-token-optional-but-valid",
        [JwtRule(issuer="a", jwks=JWKS)],
        _config(_either("origins-0"), {"origins-0": _provider("a")}),
    ),
    (
        "issuers-sorted-and-any-or-all-optional",
        [JwtRule(issuer="b", jwks=JWKS), JwtRule(issuer="a", jwks=JWKS)],
        _config(
            {
                "requires_any": {
                    "requirements": [
                        {"provider_name": "origins-0"},
                        {"provider_name": "origins-1"},
                        {
                            "requires_all": {
                                "requirements": [_either("origins-0"), _either("origins-1")]
                            }
                        },
                    ]
                }
            },
            {"origins-0": _provider("a"), "origins-1": _provider("b")},
        ),
    ),
    (
        "jwks-uri-through-the-hosts-cluster",
        [JwtRule(issuer="a", jwks_uri="https://keys.example.com/jwks.json", timeout=2.5)],
        _config(
            _either("origins-0"),
            {
                "origins-0": {
                    **{k: v for k, v in _provider("a").items() if k != "local_jwks"},
                    "remote_jwks": {
                        "http_uri": {
                            "uri": "https://keys.example.com/jwks.json",
                            "cluster": "outbound|443||keys.example.com",
                            "timeout": "2.500s",
                        },
                        "cache_duration": "300s",
                    },
                }
            },
        ),
    ),
    (
        "locations-forwarding-and-claims",
        [
            JwtRule(
                issuer="a",
                jwks=JWKS,
                audiences=("web",),
                from_headers=(JwtHeader("x-jwt", "Bearer "),),
                from_params=("token",),
                from_cookies=("session",),
                forward_original_token=True,
                output_payload_to_header="x-payload",
                output_claim_to_headers=(("sub", "x-sub"),),
                space_delimited_claims=("roles",),
            )
        ],
        _config(
            _either("origins-0"),
            {
                "origins-0": _provider(
                    "a",
                    audiences=["web"],
                    forward=True,
                    from_headers=[{"name": "x-jwt", "value_prefix": "Bearer "}],
                    from_params=["token"],
                    from_cookies=["session"],
                    forward_payload_header="x-payload",
                    claim_to_headers=[{"header_name": "x-sub", "claim_name": "sub"}],
                    normalize_payload_in_metadata={
                        "space_delimited_claims": ["permission", "roles", "scope"]
                    },
                )
            },
        ),
    ),
    (
        "issuer-only-verifies-nothing",
        [JwtRule(issuer="a")],
        _config(
            _either("origins-0"),
            {"origins-0": {**_provider("a"), "local_jwks": {"inline_string": PUBLIC_ONLY_JWKS}}},
        ),
    ),
]


@pytest.mark.parametrize(
    ("rules", "expected"), [r[1:] for r in JWT_ROWS], ids=[r[0] for r in JWT_ROWS]
)
def test_jwt_authentication(rules: list[JwtRule], expected: dict[str, Any]) -> None:
    config = jwt_authentication(rules)
    assert config is not None
    assert _fields(config) == expected


def test_no_rule_no_filter() -> None:
    assert jwt_authentication([]) is None


def _claim(claim: str, match: dict[str, Any]) -> dict[str, Any]:
    return {
        "sourced_metadata": {
            "metadata_matcher": {
                "filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "payload"}, {"key": claim}],
                "value": {"string_match": match},
            }
        }
    }


def _principal(iss: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    return {"and_ids": {"ids": [_claim("iss", iss), _claim("sub", sub)]}}


PRESENT = {"safe_regex": {"regex": ".+"}}
PRINCIPAL_ROWS = [
    ("any", "*", PRESENT, PRESENT),
    ("exact", "iss/sub", {"exact": "iss"}, {"exact": "sub"}),
    ("issuer-is-a-url", "https://a.b/c/sub", {"exact": "https://a.b/c"}, {"exact": "sub"}),
    ("any-issuer", "*/sub", PRESENT, {"exact": "sub"}),
    ("issuer-suffix", "*.b/sub", {"suffix": ".b"}, {"exact": "sub"}),
    ("any-subject", "iss/*", {"exact": "iss"}, PRESENT),
    ("subject-prefix", "iss/su*", {"exact": "iss"}, {"prefix": "su"}),
    ("no-slash-suffix", "*sub", PRESENT, {"suffix": "sub"}),
    ("no-slash-prefix", "iss*", {"prefix": "iss"}, PRESENT),
]


@pytest.mark.parametrize(
    ("value", "iss", "sub"), [r[1:] for r in PRINCIPAL_ROWS], ids=[r[0] for r in PRINCIPAL_ROWS]
)
def test_request_principal_matchers(value: str, iss: Any, sub: Any) -> None:
    built = rule_policy(Rule(sources=(Source_(request_principals=(value,)),)), True, "ALLOW")
    assert built is not None
    assert _fields(built) == {"permissions": ANY, "principals": [_principal(iss, sub)]}


def _list_or_string(path: list[str], values: list[str]) -> dict[str, Any]:
    one = [{"string_match": {"exact": v}} for v in values]
    value = one[0] if len(one) == 1 else {"or_match": {"value_matchers": one}}
    return {
        "sourced_metadata": {
            "metadata_matcher": {
                "filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "payload"}, *({"key": k} for k in path)],
                "value": {
                    "or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}
                },
            }
        }
    }


CONDITION_ROWS = [
    (
        "claims",
        Condition("request.auth.claims[groups]", ("g1",)),
        _list_or_string(["groups"], ["g1"]),
    ),
    (
        "nested-claims",
        Condition("request.auth.claims[a][b]", ("x", "y")),
        _list_or_string(["a", "b"], ["x", "y"]),
    ),
    ("audiences", Condition("request.auth.audiences", ("web",)), _list_or_string(["aud"], ["web"])),
    (
        "presenter-not-values",
        Condition("request.auth.presenter", not_values=("cli",)),
        {"not_id": _list_or_string(["azp"], ["cli"])},
    ),
    (
        "principal",
        Condition("request.auth.principal", ("iss/sub",)),
        _principal({"exact": "iss"}, {"exact": "sub"}),
    ),
]


@pytest.mark.parametrize(
    ("condition", "principal"), [r[1:] for r in CONDITION_ROWS], ids=[r[0] for r in CONDITION_ROWS]
)
def test_jwt_conditions(condition: Condition, principal: dict[str, Any]) -> None:
    built = rule_policy(Rule(conditions=(condition,)), True, "ALLOW")
    assert built is not None
    assert _fields(built) == {"permissions": ANY, "principals": [principal]}


def test_not_request_principals_and_tcp() -> None:
    rule = Rule(sources=(Source_(not_request_principals=("*",)),))
    built = rule_policy(rule, True, "DENY")
    assert built is not None
    assert _fields(built)["principals"] == [{"not_id": _principal(PRESENT, PRESENT)}]
    # TCP: an ALLOW rule that needs a JWT never matches; a DENY rule drops the field.
    assert rule_policy(rule, False, "ALLOW") is None
    tcp = rule_policy(rule, False, "DENY")
    assert tcp is not None and _fields(tcp) == {"permissions": ANY, "principals": ANY}


def _policy(name: str, action: str = "DENY", **fields: Any) -> AuthorizationPolicy:
    rules = (Rule(operations=(Operation(paths=(f"/{name}",)),)),)
    return AuthorizationPolicy(name, "ns", SOURCE, action, rules=rules, **fields)  # type: ignore[arg-type]


def _rbac_policy(name: str) -> dict[str, Any]:
    return {
        f"ns[ns]-policy[{name}]-rule[0]": {
            "permissions": [{"url_path": {"path": {"exact": f"/{name}"}}}],
            "principals": ANY,
        }
    }


def test_dry_run_policies_are_shadow_rules() -> None:
    only_dry = http_rbac_per_route([_policy("a", dry_run=True)])
    config = http_rbac_pb2.RBACPerRoute()
    only_dry["envoy.filters.http.rbac.deny"].Unpack(config)
    # No ``rules``: nothing enforced; the shadow rules are evaluated and counted.
    assert _fields(config) == {
        "rbac": {"shadow_rules": {"action": "DENY", "policies": _rbac_policy("a")}}
    }
    mixed = http_rbac_per_route([_policy("a", "ALLOW"), _policy("b", "ALLOW", dry_run=True)])
    mixed["envoy.filters.http.rbac.allow"].Unpack(config)
    assert _fields(config) == {
        "rbac": {
            "rules": {"policies": _rbac_policy("a")},  # ALLOW is the default action
            "shadow_rules": {"policies": _rbac_policy("b")},
        }
    }
    (network,) = network_rbac_filters([_policy("a", dry_run=True)], "inbound_9000")
    tcp = network_rbac_pb2.RBAC()
    network.typed_config.Unpack(tcp)
    assert _fields(tcp) == {
        "stat_prefix": "inbound_9000.deny.",
        # On TCP a DENY rule ignores its HTTP-only fields (/a): it matches everything.
        "shadow_rules": {
            "action": "DENY",
            "policies": {"ns[ns]-policy[a]-rule[0]": {"permissions": ANY, "principals": ANY}},
        },
        "shadow_rules_stat_prefix": "istio_dry_run_deny_",
    }


def test_policies_with_target_refs_apply_to_no_workload() -> None:
    workload = Workload("w", "ns", "10.0.0.1", SOURCE, labels={"app": "w"})
    gateway_only = _policy("gw", target_refs=("Gateway/g",))
    authn = RequestAuthentication("r", "ns", SOURCE, rules=(JwtRule(issuer="a"),))
    mesh = MeshConfig(
        workloads=(workload,),
        authorization_policies=(gateway_only, _policy("all")),
        request_authentications=(
            authn,
            RequestAuthentication("root", "istio-system", SOURCE, {"app": "w"}),
            RequestAuthentication("other", "ns", SOURCE, {"app": "x"}),
            RequestAuthentication("gw", "ns", SOURCE, target_refs=("Gateway/g",)),
            RequestAuthentication("elsewhere", "other", SOURCE),
        ),
    )
    assert [p.name for p in policies_for(mesh, workload)] == ["all"]
    assert [p.name for p in request_authentications_for(mesh, workload)] == ["r", "root"]


# -- parsing -----------------------------------------------------------------

REGISTRY = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}]
"""


def _load(text: str) -> LoadResult:
    return load_texts([("registry.yaml", REGISTRY), ("policy.yaml", text)])


def _messages(result: LoadResult) -> list[tuple[str, str, str]]:
    return [(d.severity.value, d.field_path, d.message) for d in result.diagnostics]


def _authn(rule: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        f"metadata: {{name: r}}\nspec:\n  jwtRules:\n  - {rule}\n"
    )


PARSE_ROWS = [
    (
        "jwks-and-jwks-uri",
        _authn(
            "{issuer: a, jwksUri: 'http://backend.default.svc.cluster.local:5000/k', "
            f"jwks: '{JWKS}'}}"
        ),
        ("error", "spec.jwtRules[0].jwks", "only one of jwks or jwksUri can be set"),
    ),
    (
        "template-uri",
        _authn("{issuer: a, jwksUri: '{{< github_file >}}/jwks.json'}"),
        (
            "error",
            "spec.jwtRules[0].jwksUri",
            "jwksUri '{{< github_file >}}/jwks.json': URI scheme '' is not supported",
        ),
    ),
    (
        "not-json",
        _authn("{issuer: a, jwks: 'secret-ish'}"),
        ("error", "spec.jwtRules[0].jwks", "jwks is not valid JSON (Expecting value at line 1)"),
    ),
    (
        "neither-issuer-nor-uri",
        _authn(f"{{jwks: '{JWKS}'}}"),
        ("error", "spec.jwtRules[0].issuer", "issuer or jwksUri must be set"),
    ),
    (
        "private-key",
        _authn('{issuer: a, jwks: \'{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}\'}'),
        (
            "warning",
            "spec.jwtRules[0].jwks",
            "jwks key at index 0 contains private key material; only public keys are used "
            "for verification",
        ),
    ),
    (
        "unknown-jwks-host",
        _authn("{issuer: a, jwksUri: 'https://keys.example.com/jwks.json'}"),
        (
            "warning",
            "spec.jwtRules[0].jwksUri",
            "no Service or ServiceEntry keys.example.com with port 443: the proxy cannot fetch "
            "these keys, so every token of this issuer is rejected (401); add a ServiceEntry "
            "for the JWKS server",
        ),
    ),
    (
        "typo-is-an-error",
        _authn("{issuer: a, jwks_url: 'x'}"),
        (
            "error",
            "spec.jwtRules[0].jwks_url",
            "unknown field 'jwks_url' (did you mean 'jwks_uri'?)",
        ),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [r[1:] for r in PARSE_ROWS], ids=[r[0] for r in PARSE_ROWS]
)
def test_request_authentication_diagnostics(text: str, expected: tuple[str, str, str]) -> None:
    result = _load(text)
    assert expected in _messages(result), _messages(result)
    assert "secret" not in " ".join(d.message for d in result.diagnostics)


def test_request_authentication_is_read() -> None:
    result = _load(
        _authn(
            "{issuer: a, jwksUri: 'http://backend.default.svc.cluster.local:5000/k', "
            "fromHeaders: [{name: x-jwt, prefix: 'Bearer '}], timeout: 2s}"
        )
    )
    assert result.mesh is not None and not result.diagnostics
    (authn,) = result.mesh.request_authentications
    (rule,) = authn.rules
    assert rule.jwks_authority == ("backend.default.svc.cluster.local", 5000)
    assert rule.from_headers == (JwtHeader("x-jwt", "Bearer "),) and rule.timeout == 2.0


def _authz(extra_meta: str, spec: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: p{extra_meta}}}\nspec:\n{spec}"
    )


def test_authorization_policy_jwt_fields_and_dry_run_are_read() -> None:
    spec = (
        "  action: DENY\n  rules:\n  - from: [{source: {notRequestPrincipals: ['*']}}]\n"
        "    when: [{key: 'request.auth.claims[a][b]', values: [x]}]\n"
    )
    result = _load(_authz(", annotations: {istio.io/dry-run: 'true'}", spec))
    assert result.mesh is not None and not result.diagnostics, _messages(result)
    (policy,) = result.mesh.authorization_policies
    assert policy.dry_run and not policy.fail_closed
    assert policy.rules[0].sources[0].not_request_principals == ("*",)


AUTHZ_ROWS = [
    (
        "dry-run-not-a-bool",
        _authz(", annotations: {istio.io/dry-run: 'maybe'}", "  action: DENY\n"),
        (
            "error",
            "metadata.annotations.istio.io/dry-run",
            "istio.io/dry-run must be true or false, not 'maybe'",
        ),
    ),
    (
        "dry-run-audit",
        _authz(", annotations: {istio.io/dry-run: 'true'}", "  action: AUDIT\n"),
        (
            "error",
            "metadata.annotations.istio.io/dry-run",
            "istio.io/dry-run supports action ALLOW or DENY only, not AUDIT",
        ),
    ),
    (
        "empty-request-principal",
        _authz("", "  rules:\n  - from: [{source: {requestPrincipals: ['']}}]\n"),
        ("error", "spec.rules[0].from[0].source.requestPrincipals[0]", "empty value not allowed"),
    ),
    (
        "bad-claims-key",
        _authz("", "  rules:\n  - when: [{key: 'request.auth.claims', values: [x]}]\n"),
        (
            "error",
            "spec.rules[0].when[0].key",
            "unsupported condition key 'request.auth.claims' (did you mean "
            "'request.auth.audiences'?); supported: request.headers[NAME], source.ip, "
            "remote.ip, source.namespace, source.principal, destination.port, destination.ip, "
            "request.auth.claims[NAME], request.auth.principal|audiences|presenter",
        ),
    ),
    (
        "target-ref-applies-to-nothing",
        _authz(
            "",
            "  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: g}\n"
            "  action: DENY\n  rules:\n  - from: [{source: {notRequestPrincipals: ['*']}}]\n",
        ),
        (
            "warning",
            "spec.targetRef",
            "this policy applies only to Gateway/g (Gateway API gateways and waypoints), which "
            "sailplane does not run: it applies to no workload here",
        ),
    ),
    (
        "target-ref-and-selector",
        _authz(
            "",
            "  selector: {matchLabels: {app: backend}}\n  targetRefs: [{kind: Service, name: s}]\n",
        ),
        ("error", "spec.selector", "only one of targetRefs or selector can be set"),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [r[1:] for r in AUTHZ_ROWS], ids=[r[0] for r in AUTHZ_ROWS]
)
def test_authorization_policy_diagnostics(text: str, expected: tuple[str, str, str]) -> None:
    result = _load(text)
    assert expected in _messages(result), _messages(result)


def test_an_invalid_target_ref_policy_does_not_deny_everything() -> None:
    text = _authz(
        "",
        "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]\n"
        "  action: BLOCK\n",
    )
    result = _load(text)
    assert result.mesh is not None
    assert [d.severity for d in result.diagnostics].count(Severity.ERROR) == 1
    assert not any("denies every request" in d.message for d in result.diagnostics)
    workload = Workload("backend", "default", "10.0.0.1", SOURCE, labels={"app": "backend"})
    assert policies_for(result.mesh, workload) == []
