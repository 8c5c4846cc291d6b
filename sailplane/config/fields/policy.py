"""Declarations of the policy kinds: PeerAuthentication, AuthorizationPolicy,
the legacy Policy, Telemetry."""

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
    # JWT: an error, worded by the parser.
    **every(REPORTED, "requestPrincipals", "notRequestPrincipals"),
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
    **every(REPORTED, "targetRef", "targetRefs[]"),  # an error
}
# authentication.istio.io/v1alpha1 Policy (before Istio 1.5), read as a PeerAuthentication.
LEGACY_POLICY: Fields = {
    **at("targets[]", {"name": IMPLEMENTED, "ports[]": UNSUPPORTED}),
    **at("peers[]", {**at("mtls", {"mode": IMPLEMENTED, "allowTls": UNSUPPORTED})}),
    "peers[].jwt": UNSUPPORTED,
    **every(UNSUPPORTED, "peerIsOptional", "origins[]", "originIsOptional", "principalBinding"),
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
            "customTags{}": REPORTED,  # a warning
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
        {**_PROVIDERS, **_MODE_MATCH, "disabled": IMPLEMENTED, "filter": REPORTED},
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
                    # A per-metric override: a warning, it applies to every metric.
                    **at(
                        "match", {"mode": IMPLEMENTED, **every(REPORTED, "metric", "customMetric")}
                    ),
                    "tagOverrides{}": REPORTED,
                },
            ),
        },
    ),
}
