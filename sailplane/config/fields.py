"""What sailplane does with each field of the kinds it reads, as data.

One mapping per kind, from a field's path under ``spec`` to what sailplane
does with it. Paths: ``a.b`` is field ``b`` of message ``a``; ``a[]`` a list
of messages, whose items' fields are ``a[].x``; ``a{}`` a map of messages,
whose values' fields are ``a{}.x``; lists and maps of scalars are leaves.

This is the one source of truth for the fields a parser knows: the kind's
fields are checked against it before the parser reads them (fieldcheck.py),
so a field in no declaration is "unknown" and one declared but not
implemented is reported when set, never silently dropped. The declarations
cover every field of Istio's API: tests/unit/test_field_support.py compares
them with the fields of istio/api's CRD schemas (tests/data/istio-api-fields).

A field counts as implemented only if translation uses it: a value read into
the model that no Envoy resource reflects is not implemented. A declaration
under a field that is not implemented would never be consulted, so there is
none: the whole subtree shares its root's fate.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sailplane.model.source import Severity


class Support(enum.Enum):
    IMPLEMENTED = "implemented"
    # Known, not implemented: a warning when set ("X is not supported yet;
    # ignored"); the rest of the object applies.
    UNSUPPORTED = "unsupported"
    # Known, not implemented, and unsafe to ignore (it narrows who a security
    # policy matches): an error when set.
    REJECTED = "rejected"
    # Not implemented; the kind's parser reports it in its own words (which
    # say what happens instead), so the field check says nothing.
    REPORTED = "reported"
    # Kubernetes machinery with no meaning outside a cluster (cluster IPs,
    # node ports, cloud load balancers): accepted without a word.
    INERT = "inert"


@dataclass(frozen=True, slots=True)
class Field:
    support: Support
    # Values sailplane always behaves as: setting one changes nothing, so it
    # is not reported (a list value is written as a tuple).
    harmless: tuple[object, ...] = ()


IMPLEMENTED = Field(Support.IMPLEMENTED)
UNSUPPORTED = Field(Support.UNSUPPORTED)
REJECTED = Field(Support.REJECTED)
REPORTED = Field(Support.REPORTED)
INERT = Field(Support.INERT)


def unsupported_unless(*harmless: object) -> Field:
    return Field(Support.UNSUPPORTED, harmless)


@dataclass(frozen=True, slots=True)
class KindFields:
    kind: str
    fields: Mapping[str, Field]
    # How an unknown field (a typo) is reported: an error where losing a
    # setting is unsafe (security policies), else a warning.
    unknown: Severity = Severity.WARNING


Fields = dict[str, Field]


def _at(prefix: str, fragment: Mapping[str, Field]) -> Fields:
    """The implemented message field ``prefix`` and, under it, ``fragment``."""
    return {prefix: IMPLEMENTED, **{f"{prefix}.{path}": field for path, field in fragment.items()}}


def _all(status: Field, *paths: str) -> Fields:
    return dict.fromkeys(paths, status)


# -- shared messages ---------------------------------------------------------

_STRING_MATCH = _all(IMPLEMENTED, "exact", "prefix", "regex")
_PERCENT = _all(IMPLEMENTED, "value")
_PORT_SELECTOR = _all(IMPLEMENTED, "number")
_DESTINATION = {**_all(IMPLEMENTED, "host", "subset"), **_at("port", _PORT_SELECTOR)}
_HEADER_OPERATIONS = _all(IMPLEMENTED, "set", "add", "remove")
_HEADERS = {**_at("request", _HEADER_OPERATIONS), **_at("response", _HEADER_OPERATIONS)}
_MATCH_LABELS = _all(IMPLEMENTED, "matchLabels")

# -- VirtualService ----------------------------------------------------------

_HTTP_MATCH: Fields = {
    **_all(
        IMPLEMENTED,
        "name",
        "port",
        "sourceLabels",
        "sourceNamespace",
        "gateways",
        "ignoreUriCase",
    ),
    **_at("uri", _STRING_MATCH),
    **_at("scheme", _STRING_MATCH),
    **_at("method", _STRING_MATCH),
    **_at("authority", _STRING_MATCH),
    **_at("headers{}", _STRING_MATCH),
    **_at("withoutHeaders{}", _STRING_MATCH),
    **_at("queryParams{}", _STRING_MATCH),
    "statPrefix": UNSUPPORTED,
}
_HTTP_ROUTE: Fields = {
    **_all(IMPLEMENTED, "name", "timeout"),
    **_at("match[]", _HTTP_MATCH),
    **_at(
        "route[]",
        {**_at("destination", _DESTINATION), "weight": IMPLEMENTED, **_at("headers", _HEADERS)},
    ),
    **_at(
        "redirect",
        {
            **_all(IMPLEMENTED, "uri", "authority", "port", "scheme", "redirectCode"),
            **_all(UNSUPPORTED, "derivePort", "prefixRewrite"),
        },
    ),
    **_at(
        "directResponse",
        {
            "status": IMPLEMENTED,
            **_at("body", {"string": IMPLEMENTED, "bytes": UNSUPPORTED}),
        },
    ),
    "delegate": REPORTED,  # an error: the route would mean something else
    **_at(
        "rewrite",
        {
            **_all(IMPLEMENTED, "uri", "authority"),
            **_at("uriRegexRewrite", _all(IMPLEMENTED, "match", "rewrite")),
        },
    ),
    **_at(
        "retries",
        {
            **_all(
                IMPLEMENTED,
                "attempts",
                "perTryTimeout",
                "retryOn",
                "retryIgnorePreviousHosts",
                "retryRemoteLocalities",
                "backoff",
            ),
        },
    ),
    **_at(
        "fault",
        {
            **_at(
                "delay",
                {
                    **_all(IMPLEMENTED, "fixedDelay", "percent"),
                    **_at("percentage", _PERCENT),
                    "exponentialDelay": UNSUPPORTED,
                },
            ),
            **_at(
                "abort",
                {
                    "httpStatus": IMPLEMENTED,
                    **_at("percentage", _PERCENT),
                    **_all(UNSUPPORTED, "grpcStatus", "http2Error"),
                },
            ),
        },
    ),
    **_at("mirror", _DESTINATION),
    **_at("mirrorPercentage", _PERCENT),
    **_all(UNSUPPORTED, "mirrorPercent", "mirror_percent", "mirrors[]"),
    **_at(
        "corsPolicy",
        {
            **_at("allowOrigins[]", _STRING_MATCH),
            **_all(
                IMPLEMENTED,
                "allowOrigin",
                "allowMethods",
                "allowHeaders",
                "exposeHeaders",
                "maxAge",
                "allowCredentials",
            ),
            "unmatchedPreflights": UNSUPPORTED,
        },
    ),
    **_at("headers", _HEADERS),
}
# TCP routes are translated for gateways only: the port decides.
_TCP_ROUTE: Fields = {
    **_at(
        "match[]",
        {
            "port": IMPLEMENTED,
            **_all(
                UNSUPPORTED,
                "sourceLabels",
                "gateways",
                "destinationSubnets",
                "sourceNamespace",
                "sourceSubnet",
            ),
        },
    ),
    **_at("route[]", {**_at("destination", _DESTINATION), "weight": IMPLEMENTED}),
}
_VIRTUAL_SERVICE: Fields = {
    **_all(IMPLEMENTED, "hosts", "gateways", "exportTo"),
    **_at("http[]", _HTTP_ROUTE),
    **_at("tcp[]", _TCP_ROUTE),
    "tls[]": REPORTED,  # an error
}

# -- DestinationRule ---------------------------------------------------------

_LOAD_BALANCER: Fields = {
    "simple": IMPLEMENTED,
    **_at(
        "consistentHash",
        {
            **_all(IMPLEMENTED, "httpHeaderName", "useSourceIp", "httpQueryParameterName"),
            **_at(
                "httpCookie",
                {**_all(IMPLEMENTED, "name", "path", "ttl"), "attributes[]": UNSUPPORTED},
            ),
            "minimumRingSize": IMPLEMENTED,
            **_at("ringHash", _all(IMPLEMENTED, "minimumRingSize")),
            "maglev": UNSUPPORTED,
        },
    ),
    **_all(UNSUPPORTED, "localityLbSetting", "warmupDurationSecs", "warmup", "zoneAwareLbSetting"),
}
_CONNECTION_POOL: Fields = {
    **_at(
        "tcp",
        {
            **_all(IMPLEMENTED, "maxConnections", "connectTimeout"),
            **_all(UNSUPPORTED, "tcpKeepalive", "maxConnectionDuration", "idleTimeout"),
        },
    ),
    **_at(
        "http",
        {
            **_all(
                IMPLEMENTED,
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "idleTimeout",
            ),
            "h2UpgradePolicy": unsupported_unless("DEFAULT", "DO_NOT_UPGRADE"),
            "useClientProtocol": unsupported_unless(False),
            **_all(UNSUPPORTED, "maxConcurrentStreams", "http2KeepAlive"),
        },
    ),
}
_OUTLIER_DETECTION: Fields = {
    **_all(
        IMPLEMENTED,
        "consecutiveErrors",  # deprecated: read as consecutive5xxErrors, with a warning
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
        "minHealthPercent",
    ),
    **_all(
        UNSUPPORTED,
        "consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
        "outlierDetectionHttpErrorCodes",
    ),
}
_CLIENT_TLS: Fields = {
    **_all(
        IMPLEMENTED,
        "mode",
        "clientCertificate",
        "privateKey",
        "caCertificates",
        "sni",
        "subjectAltNames",
    ),
    **_all(UNSUPPORTED, "credentialName", "insecureSkipVerify", "caCrl"),
}
_PORT_TRAFFIC_POLICY: Fields = {
    **_at("loadBalancer", _LOAD_BALANCER),
    **_at("connectionPool", _CONNECTION_POOL),
    **_at("outlierDetection", _OUTLIER_DETECTION),
    **_at("tls", _CLIENT_TLS),
}
_TRAFFIC_POLICY: Fields = {
    **_PORT_TRAFFIC_POLICY,
    **_at("portLevelSettings[]", {**_at("port", _PORT_SELECTOR), **_PORT_TRAFFIC_POLICY}),
    **_all(UNSUPPORTED, "tunnel", "proxyProtocol", "retryBudget"),
}
_DESTINATION_RULE: Fields = {
    "host": IMPLEMENTED,
    **_at("trafficPolicy", _TRAFFIC_POLICY),
    **_at(
        "subsets[]",
        {**_all(IMPLEMENTED, "name", "labels"), **_at("trafficPolicy", _TRAFFIC_POLICY)},
    ),
    # Read, but every rule applies to every namespace (Istio's default).
    "exportTo": unsupported_unless(("*",)),
    "workloadSelector": UNSUPPORTED,
}

# -- Gateway -----------------------------------------------------------------

_GATEWAY: Fields = {
    "selector": IMPLEMENTED,
    **_at(
        "servers[]",
        {
            **_at(
                "port",
                {**_all(IMPLEMENTED, "number", "protocol", "name"), "targetPort": UNSUPPORTED},
            ),
            **_all(IMPLEMENTED, "hosts", "name"),
            **_all(UNSUPPORTED, "bind", "defaultEndpoint"),
            **_at(
                "tls",
                {
                    **_all(
                        IMPLEMENTED, "mode", "serverCertificate", "privateKey", "caCertificates"
                    ),
                    **_all(
                        UNSUPPORTED,
                        "httpsRedirect",
                        "credentialName",
                        "credentialNames",
                        "tlsCertificates[]",
                        "caCertCredentialName",
                        "caCrl",
                        "subjectAltNames",
                        "verifyCertificateSpki",
                        "verifyCertificateHash",
                        "minProtocolVersion",
                        "maxProtocolVersion",
                        "cipherSuites",
                        "insecureSkipVerify",
                    ),
                },
            ),
        },
    ),
}

# -- the registry ------------------------------------------------------------

_WORKLOAD: Fields = {
    **_all(IMPLEMENTED, "address", "ports", "labels", "weight", "serviceAccount"),
    **_all(UNSUPPORTED, "network", "locality"),
}
_SERVICE_ENTRY: Fields = {
    **_all(IMPLEMENTED, "hosts", "location", "resolution", "exportTo"),
    **_at("ports[]", _all(IMPLEMENTED, "number", "protocol", "name", "targetPort")),
    **_at("endpoints[]", _WORKLOAD),
    **_at("workloadSelector", _all(IMPLEMENTED, "labels")),
    # Read, but routing is by host name: no virtual IPs.
    **_all(UNSUPPORTED, "addresses", "subjectAltNames"),
}
_WORKLOAD_ENTRY: Fields = _WORKLOAD
# Kubernetes' ServiceSpec (core/v1): only ports and selector define a service.
_KUBERNETES_SERVICE: Fields = {
    **_at(
        "ports[]",
        {**_all(IMPLEMENTED, "name", "port", "targetPort", "protocol", "appProtocol")},
    ),
    "ports[].nodePort": INERT,
    "selector": IMPLEMENTED,
    **_all(
        INERT,
        "type",
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
        "externalTrafficPolicy",
        "publishNotReadyAddresses",
    ),
    "externalName": UNSUPPORTED,
    "sessionAffinity": unsupported_unless("None"),
}

# -- Sidecar -----------------------------------------------------------------

_SIDECAR: Fields = {
    **_at("workloadSelector", _all(IMPLEMENTED, "labels")),
    "ingress[]": REPORTED,  # a warning
    **_at(
        "egress[]",
        {"hosts": IMPLEMENTED, **_all(UNSUPPORTED, "port", "bind", "captureMode")},
    ),
    **_at("outboundTrafficPolicy", {"mode": IMPLEMENTED, "egressProxy": UNSUPPORTED}),
    "inboundConnectionPool": UNSUPPORTED,
}

# -- security ----------------------------------------------------------------

_PEER_AUTHENTICATION: Fields = {
    **_at("selector", _MATCH_LABELS),
    **_at("mtls", _all(IMPLEMENTED, "mode")),
    **_at("portLevelMtls{}", _all(IMPLEMENTED, "mode")),
}
_AUTHZ_SOURCE: Fields = {
    **_all(
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
    **_all(REPORTED, "requestPrincipals", "notRequestPrincipals"),
    **_all(REJECTED, "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains"),
}
_AUTHZ_OPERATION = _all(
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
_AUTHORIZATION_POLICY: Fields = {
    **_at("selector", _MATCH_LABELS),
    "action": IMPLEMENTED,  # CUSTOM is an error (the parser's)
    "provider": UNSUPPORTED,  # used by CUSTOM only
    **_at(
        "rules[]",
        {
            **_at("from[]", _at("source", _AUTHZ_SOURCE)),
            **_at("to[]", _at("operation", _AUTHZ_OPERATION)),
            **_at("when[]", _all(IMPLEMENTED, "key", "values", "notValues")),
        },
    ),
    **_all(REPORTED, "targetRef", "targetRefs[]"),  # an error
}
# authentication.istio.io/v1alpha1 Policy (before Istio 1.5), read as a PeerAuthentication.
_LEGACY_POLICY: Fields = {
    **_at("targets[]", {"name": IMPLEMENTED, "ports[]": UNSUPPORTED}),
    **_at("peers[]", {**_at("mtls", {"mode": IMPLEMENTED, "allowTls": UNSUPPORTED})}),
    "peers[].jwt": UNSUPPORTED,
    **_all(UNSUPPORTED, "peerIsOptional", "origins[]", "originIsOptional", "principalBinding"),
}

# -- Telemetry ---------------------------------------------------------------

_PROVIDERS = _at("providers[]", _all(IMPLEMENTED, "name"))
_MODE_MATCH = _at("match", _all(IMPLEMENTED, "mode"))
_TELEMETRY: Fields = {
    **_at("selector", _MATCH_LABELS),
    **_all(REPORTED, "targetRef", "targetRefs[]"),  # a warning
    **_at(
        "tracing[]",
        {
            **_PROVIDERS,
            **_MODE_MATCH,
            **_all(IMPLEMENTED, "randomSamplingPercentage", "disableSpanReporting"),
            "customTags{}": REPORTED,  # a warning
            **_all(
                UNSUPPORTED,
                "useRequestIdForTraceSampling",
                "enableIstioTags",
                "disableContextPropagation",
            ),
        },
    ),
    **_at(
        "accessLogging[]",
        {**_PROVIDERS, **_MODE_MATCH, "disabled": IMPLEMENTED, "filter": REPORTED},
    ),
    **_at(
        "metrics[]",
        {
            **_PROVIDERS,
            "reportingInterval": IMPLEMENTED,
            **_at(
                "overrides[]",
                {
                    "disabled": IMPLEMENTED,
                    # A per-metric override: a warning, it applies to every metric.
                    **_at(
                        "match", {"mode": IMPLEMENTED, **_all(REPORTED, "metric", "customMetric")}
                    ),
                    "tagOverrides{}": REPORTED,
                },
            ),
        },
    ),
}


def _frozen(kind: str, fields: Fields, unknown: Severity = Severity.WARNING) -> KindFields:
    return KindFields(kind, MappingProxyType(dict(sorted(fields.items()))), unknown)


DECLARED: Mapping[str, KindFields] = MappingProxyType(
    {
        k.kind: k
        for k in (
            _frozen("VirtualService", _VIRTUAL_SERVICE),
            _frozen("DestinationRule", _DESTINATION_RULE),
            _frozen("Gateway", _GATEWAY),
            _frozen("ServiceEntry", _SERVICE_ENTRY),
            _frozen("WorkloadEntry", _WORKLOAD_ENTRY),
            _frozen("Service", _KUBERNETES_SERVICE),
            _frozen("Sidecar", _SIDECAR),
            _frozen("PeerAuthentication", _PEER_AUTHENTICATION),
            # `rule:` for `rules:` would otherwise turn a DENY into nothing at all.
            _frozen("AuthorizationPolicy", _AUTHORIZATION_POLICY, Severity.ERROR),
            _frozen("Policy", _LEGACY_POLICY),
            _frozen("Telemetry", _TELEMETRY),
        )
    }
)
