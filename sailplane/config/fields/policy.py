"""Declarations of the policy kinds: PeerAuthentication, AuthorizationPolicy,
RequestAuthentication, the legacy Policy and MeshPolicy, Telemetry."""

from __future__ import annotations

from sailplane.config.fields.core import (
    IMPLEMENTED,
    MATCH_LABELS,
    REJECTED,
    REPORTED,
    UNSUPPORTED,
    Fields,
    at,
    every,
)

# -- security ----------------------------------------------------------------

PEER_AUTHENTICATION: Fields = {
    **at("selector", MATCH_LABELS),
    **at("mtls", every(IMPLEMENTED, "mode")),
    **at("portLevelMtls{}", every(IMPLEMENTED, "mode")),
}
_AUTHZ_SOURCE: Fields = {
    **every(
        IMPLEMENTED,
        "principals",
        "notPrincipals",
        "namespaces",
        "notNamespaces",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
    ),
    # JWT: the claims RequestAuthentication verified (jwt_authn's metadata).
    **every(IMPLEMENTED, "requestPrincipals", "notRequestPrincipals"),
    **every(REJECTED, "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains"),
}
_AUTHZ_OPERATION = every(
    IMPLEMENTED,
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
)
AUTHORIZATION_POLICY: Fields = {
    **at("selector", MATCH_LABELS),
    "action": IMPLEMENTED,  # CUSTOM is an error (the parser's)
    "provider": UNSUPPORTED,  # used by CUSTOM only
    **at(
        "rules[]",
        {
            **at("from[]", at("source", _AUTHZ_SOURCE)),
            **at("to[]", at("operation", _AUTHZ_OPERATION)),
            **at("when[]", every(IMPLEMENTED, "key", "values", "notValues")),
        },
    ),
    # A warning: the policy then applies to no workload (no Gateway API here).
    **every(REPORTED, "targetRef", "targetRefs[]"),
}
REQUEST_AUTHENTICATION: Fields = {
    **at("selector", MATCH_LABELS),
    **every(REPORTED, "targetRef", "targetRefs[]"),  # as AuthorizationPolicy's
    **at(
        "jwtRules[]",
        {
            **every(
                IMPLEMENTED,
                "issuer",
                "audiences",
                "jwks",
                "jwksUri",
                "jwks_uri",
                "fromParams",
                "fromCookies",
                "forwardOriginalToken",
                "outputPayloadToHeader",
                "spaceDelimitedClaims",
                "timeout",
            ),
            **at("fromHeaders[]", every(IMPLEMENTED, "name", "prefix")),
            **at("outputClaimToHeaders[]", every(IMPLEMENTED, "claim", "header")),
        },
    ),
}
# authentication.istio.io/v1alpha1 Policy (before Istio 1.5), read as a PeerAuthentication.
LEGACY_POLICY: Fields = {
    **at("targets[]", {"name": IMPLEMENTED, "ports[]": UNSUPPORTED}),
    **at("peers[]", {**at("mtls", {"mode": IMPLEMENTED, "allowTls": UNSUPPORTED})}),
    "peers[].jwt": UNSUPPORTED,
    **every(UNSUPPORTED, "peerIsOptional", "origins[]", "originIsOptional", "principalBinding"),
}
# authentication.istio.io/v1alpha1 MeshPolicy: the same message, mesh-wide; Istio
# refused targets on it (an error, the parser's).
MESH_POLICY: Fields = {
    **{k: v for k, v in LEGACY_POLICY.items() if not k.startswith("targets[]")},
    "targets[]": REPORTED,
}

# -- Telemetry ---------------------------------------------------------------

_PROVIDERS = at("providers[]", every(IMPLEMENTED, "name"))
_MODE_MATCH = at("match", every(IMPLEMENTED, "mode"))
TELEMETRY: Fields = {
    **at("selector", MATCH_LABELS),
    **every(REPORTED, "targetRef", "targetRefs[]"),  # a warning
    **at(
        "tracing[]",
        {
            **_PROVIDERS,
            **_MODE_MATCH,
            **every(IMPLEMENTED, "randomSamplingPercentage", "disableSpanReporting"),
            **at(
                "customTags{}",
                {
                    **at("literal", every(IMPLEMENTED, "value")),
                    **at("environment", every(IMPLEMENTED, "name", "defaultValue")),
                    **at("header", every(IMPLEMENTED, "name", "defaultValue")),
                    **at("formatter", every(IMPLEMENTED, "value")),
                },
            ),
            **every(
                UNSUPPORTED,
                "useRequestIdForTraceSampling",
                "enableIstioTags",
                "disableContextPropagation",
            ),
        },
    ),
    **at(
        "accessLogging[]",
        {
            **_PROVIDERS,
            **_MODE_MATCH,
            "disabled": IMPLEMENTED,
            **at("filter", {"expression": IMPLEMENTED}),
        },
    ),
    **at(
        "metrics[]",
        {
            **_PROVIDERS,
            "reportingInterval": IMPLEMENTED,
            **at(
                "overrides[]",
                {
                    "disabled": IMPLEMENTED,
                    # customMetric: a standard metric by its stats-filter name, else a warning.
                    **at("match", every(IMPLEMENTED, "mode", "metric", "customMetric")),
                    **at("tagOverrides{}", every(IMPLEMENTED, "operation", "value")),
                },
            ),
        },
    ),
}
