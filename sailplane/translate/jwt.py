"""RequestAuthentication -> Envoy's ``jwt_authn`` HTTP filter, as Istio's
authn policy applier builds it (pilot/pkg/security/authn/policy_applier.go,
convertToEnvoyJwtConfig).

Every rule of every RequestAuthentication that applies to the workload
(mesh-wide in the root namespace, namespace-wide, by selector: all of them,
not the most specific one) is one provider, ``origins-N`` in issuer order.
The requirement: a token, if there is one, must satisfy some provider
(invalid: 401); no token passes (``allow_missing``), and AuthorizationPolicy
judges the request then. Each provider writes the verified payload to the
dynamic metadata of ``envoy.filters.http.jwt_authn`` under ``payload``, where
the RBAC filters after it read ``iss``, ``sub``, ``aud``, ``azp`` and any
claim (translate/authz.py), as Istio's authz builder does; Istio's own
``istio_authn`` filter is not needed for that.

``jwksUri``: the proxy fetches the keys itself through the cluster
``outbound|PORT||HOST`` of the URI (Istio's PILOT_JWT_ENABLE_REMOTE_JWKS=envoy
mode); the control plane never fetches a URL it read from configuration
(Istio's default, istiod fetching and inlining, would make it). A host the
registry does not know still gets that cluster name, which then does not
exist: every token of that issuer is refused, as with Istio, and the
configuration check says so (config/requestauthn.py).

The filter is part of the listener (providers cannot travel per route), so
a RequestAuthentication change is a listener change: connections opened
before it keep the old keys until they close, as with Istio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from envoy.config.core.v3 import http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import empty_pb2

from sailplane.model.authz import Condition, claim_path
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.model.security import JwtRule, RequestAuthentication
from sailplane.translate import names
from sailplane.translate.common import duration, pack
from sailplane.translate.rbac_values import any_of_ids, id_values, workload_policies

JWT_FILTER = "envoy.filters.http.jwt_authn"
# The dynamic metadata key of the verified payload (Istio's EnvoyJwtFilterPayload).
JWT_PAYLOAD = "payload"
DEFAULT_TIMEOUT = 5.0  # seconds, Istio's default for fetching jwksUri
JWKS_CACHE_SECONDS = 5 * 60
# Claims Istio always splits on spaces (OAuth scopes), plus the rule's own.
SPACE_DELIMITED = ("permission", "scope")
# Istio's fail-closed JWKS (pilot/pkg/model/jwks_resolver.go PublicOnlyJwks):
# a public RSA key whose private key was discarded, so no token verifies.
# Used where Istio would have istiod discover the keys (issuer only).
PUBLIC_ONLY_JWKS = (
    '{"keys":[{"kty":"RSA","e":"AQAB","n":"0xObjM0UvS_oaazjpEYlAbwctEJ4L8pH3OuTb7qth7gUwqet'
    "-EzQB4dgFdvSdMgrLnSncQGRjpEYz3F3viIbH-3EN3TxSlPNviHxeOdyiBVfumN8dMxbLvVJUpfNOnvmMxJcl-8N"
    "NjAwcOjk4otSALaYgYYyOPyvKtgVdrQr-FoubWX4yrjxW-MJ2-7OBeepUUNOsVwGV23YX03sVkkyvY3otRflkBcY"
    "3_HKpBxJl9wk2GyOShN4_PNUF9-vwfnvOXMbCDX-w4PTef4geeb_GiT40YCKHTKMSPVanGRn5GExIWmki-mmqh9"
    '4-mPTJyBR74ShspL3BxPZitDL574T1w"}]}'
)


def request_authentications_for(
    mesh: MeshConfig, workload: Workload
) -> list[RequestAuthentication]:
    """Every RequestAuthentication that applies to ``workload``: mesh-wide
    (root namespace), namespace-wide and by selector (Istio merges them all:
    model/authentication.go GetJwtPoliciesForWorkload). One with
    ``targetRefs`` applies to no workload here."""
    return workload_policies(mesh.request_authentications, mesh.root_namespace, workload)


def _space_delimited(rule: JwtRule) -> list[str]:
    return sorted({*rule.space_delimited_claims, *SPACE_DELIMITED})


def _provider(rule: JwtRule) -> jwt_pb2.JwtProvider:
    provider = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        forward=rule.forward_original_token,
        forward_payload_header=rule.output_payload_to_header,
        payload_in_metadata=JWT_PAYLOAD,
        normalize_payload_in_metadata=jwt_pb2.JwtProvider.NormalizePayload(
            space_delimited_claims=_space_delimited(rule)
        ),
        from_headers=[
            jwt_pb2.JwtHeader(name=h.name, value_prefix=h.prefix) for h in rule.from_headers
        ],
        from_params=list(rule.from_params),
        from_cookies=list(rule.from_cookies),
        claim_to_headers=[
            jwt_pb2.JwtClaimToHeader(header_name=header, claim_name=claim)
            for claim, header in rule.output_claim_to_headers
        ],
    )
    authority = rule.jwks_authority
    if rule.jwks_uri and authority is not None:
        host, port = authority
        provider.remote_jwks.CopyFrom(
            jwt_pb2.RemoteJwks(
                http_uri=http_uri_pb2.HttpUri(
                    uri=rule.jwks_uri,
                    cluster=names.outbound_cluster_name(port, host),
                    timeout=duration(rule.timeout or DEFAULT_TIMEOUT),
                ),
                cache_duration=duration(JWKS_CACHE_SECONDS),
            )
        )
    else:
        provider.local_jwks.inline_string = rule.jwks or PUBLIC_ONLY_JWKS
    return provider


def _requires(name: str) -> jwt_pb2.JwtRequirement:
    return jwt_pb2.JwtRequirement(provider_name=name)


def jwt_authentication(rules: Iterable[JwtRule]) -> jwt_pb2.JwtAuthentication | None:
    """The filter's configuration for ``rules``; None without any."""
    ordered = sorted(rules, key=lambda r: r.issuer)
    if not ordered:
        return None
    providers: dict[str, jwt_pb2.JwtProvider] = {}
    # Per provider: {provider OR allow_missing}, ANDed over the providers, so a
    # token found at any provider's location must be valid for it ...
    inner: list[jwt_pb2.JwtRequirement] = []
    # ... OR any one provider, for providers that share a location (the AND
    # would always fail there).
    outer: list[jwt_pb2.JwtRequirement] = []
    for index, rule in enumerate(ordered):
        name = f"origins-{index}"
        providers[name] = _provider(rule)
        inner.append(
            jwt_pb2.JwtRequirement(
                requires_any=jwt_pb2.JwtRequirementOrList(
                    requirements=[
                        _requires(name),
                        jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()),
                    ]
                )
            )
        )
        outer.append(_requires(name))
    if len(inner) == 1:
        requires = inner[0]
    else:
        outer.append(
            jwt_pb2.JwtRequirement(requires_all=jwt_pb2.JwtRequirementAndList(requirements=inner))
        )
        requires = jwt_pb2.JwtRequirement(
            requires_any=jwt_pb2.JwtRequirementOrList(requirements=outer)
        )
    config = jwt_pb2.JwtAuthentication(
        rules=[jwt_pb2.RequirementRule(match=rc.RouteMatch(prefix="/"), requires=requires)],
        bypass_cors_preflight=True,
    )
    for name, provider in providers.items():
        config.providers[name].CopyFrom(provider)
    return config


def jwt_filters(policies: Iterable[RequestAuthentication]) -> list[hcm_pb2.HttpFilter]:
    """The ``jwt_authn`` filter for an inbound or gateway HTTP connection
    manager, before its RBAC filters; none when no rule applies."""
    config = jwt_authentication(rule for policy in policies for rule in policy.rules)
    if config is None:
        return []
    return [hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(config))]


# -- RBAC matchers on the verified payload (Istio's authz/model/generator.go) --


def _string(value: str) -> string_pb2.StringMatcher:
    """Istio's matcher.StringMatcher: ``*`` is present, ``a*`` a prefix,
    ``*a`` a suffix, else exact (case-sensitive)."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1])
    return string_pb2.StringMatcher(exact=value)


def _path(keys: Sequence[str]) -> list[metadata_pb2.MetadataMatcher.PathSegment]:
    return [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (JWT_PAYLOAD, *keys)]


def _metadata(matcher: metadata_pb2.MetadataMatcher) -> rbac_pb2.Principal:
    """Istio writes ``Principal.metadata``, which Envoy 1.40 warns is
    deprecated; ``sourced_metadata`` (dynamic metadata, the default source)
    matches the same."""
    return rbac_pb2.Principal(sourced_metadata=rbac_pb2.SourcedMetadata(metadata_matcher=matcher))


def _claim_is(claim: str, matcher: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return _metadata(
        metadata_pb2.MetadataMatcher(
            filter=JWT_FILTER,
            path=_path((claim,)),
            value=value_pb2.ValueMatcher(string_match=matcher),
        )
    )


def _any_value(values: Sequence[str]) -> value_pb2.ValueMatcher:
    matchers = [value_pb2.ValueMatcher(string_match=_string(v)) for v in values]
    if len(matchers) == 1:
        return matchers[0]
    return value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=matchers))


def claim_principal(claims: Sequence[str], values: Sequence[str]) -> rbac_pb2.Principal:
    """A claim (``aud``, ``groups``, nested ``a.b``) with any of ``values``:
    a list claim matches when one of its items does, a string when it does
    (Istio's MetadataListValueMatcher with useExtendedJwt)."""
    value = _any_value(values)
    either = value_pb2.ValueMatcher(
        or_match=value_pb2.OrMatcher(
            value_matchers=[
                value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=value)),
                value,
            ]
        )
    )
    return _metadata(
        metadata_pb2.MetadataMatcher(filter=JWT_FILTER, path=_path(claims), value=either)
    )


def _issuer_subject(value: str) -> tuple[string_pb2.StringMatcher, string_pb2.StringMatcher]:
    """``ISSUER/SUBJECT`` with Istio's wildcards (requestPrincipalGenerator);
    the issuer ends at the last ``/``, since it may be a URL."""
    any_value = _string("*")
    iss, slash, sub = value.rpartition("/")
    if not slash:
        iss, sub = value, ""
    if value == "*":
        return any_value, any_value
    if value.startswith("*"):
        if slash:
            return (any_value if iss == "*" else _string(iss)), string_pb2.StringMatcher(exact=sub)
        return any_value, _string(value)
    if value.endswith("*"):
        if slash:
            subject = string_pb2.StringMatcher(prefix=sub[:-1]) if sub != "*" else any_value
            return string_pb2.StringMatcher(exact=iss), subject
        return _string(value), any_value
    return string_pb2.StringMatcher(exact=iss), string_pb2.StringMatcher(exact=sub)


def request_principals(values: Sequence[str]) -> rbac_pb2.Principal:
    """``requestPrincipals`` / ``request.auth.principal``: the token's
    ``iss`` and ``sub`` claims, for any of ``values``."""
    ors = []
    for value in values:
        iss, sub = _issuer_subject(value)
        ors.append(
            rbac_pb2.Principal(
                and_ids=rbac_pb2.Principal.Set(ids=[_claim_is("iss", iss), _claim_is("sub", sub)])
            )
        )
    return any_of_ids(ors)


JWT_CLAIMS = {"request.auth.audiences": ("aud",), "request.auth.presenter": ("azp",)}


def jwt_condition(cond: Condition) -> rbac_pb2.Principal:
    """``request.auth.principal``, ``.audiences``, ``.presenter`` and
    ``.claims[NAME]``: the values are matched as one (ORed) matcher,
    the notValues negated as one."""
    if cond.key == "request.auth.principal":
        make: Callable[[tuple[str, ...]], rbac_pb2.Principal] = request_principals
    else:
        claims = JWT_CLAIMS.get(cond.key) or claim_path(cond.key)
        assert claims is not None, cond.key  # the parser accepts no other key

        def make(values: tuple[str, ...]) -> rbac_pb2.Principal:
            return claim_principal(claims, values)

    return id_values(cond, make)
