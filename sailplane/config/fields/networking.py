"""Declarations of the networking kinds: VirtualService, DestinationRule,
Gateway, ServiceEntry, WorkloadEntry, the Kubernetes Service, Sidecar."""

from __future__ import annotations

from sailplane.config.fields.core import (
    DESTINATION,
    HEADERS,
    IMPLEMENTED,
    INERT,
    PERCENT,
    PORT_SELECTOR,
    REPORTED,
    STRING_MATCH,
    UNSUPPORTED,
    Fields,
    at,
    every,
    unsupported_unless,
)

# -- VirtualService ----------------------------------------------------------

_HTTP_MATCH: Fields = {
    **every(
        IMPLEMENTED,
        "name",
        "port",
        "sourceLabels",
        "sourceNamespace",
        "gateways",
        "ignoreUriCase",
    ),
    **at("uri", STRING_MATCH),
    **at("scheme", STRING_MATCH),
    **at("method", STRING_MATCH),
    **at("authority", STRING_MATCH),
    **at("headers{}", STRING_MATCH),
    **at("withoutHeaders{}", STRING_MATCH),
    **at("queryParams{}", STRING_MATCH),
    "statPrefix": UNSUPPORTED,
}
_HTTP_ROUTE: Fields = {
    **every(IMPLEMENTED, "name", "timeout"),
    **at("match[]", _HTTP_MATCH),
    **at(
        "route[]",
        {**at("destination", DESTINATION), "weight": IMPLEMENTED, **at("headers", HEADERS)},
    ),
    **at(
        "redirect",
        {
            **every(IMPLEMENTED, "uri", "authority", "port", "scheme", "redirectCode"),
            **every(UNSUPPORTED, "derivePort", "prefixRewrite"),
        },
    ),
    **at(
        "directResponse",
        {
            "status": IMPLEMENTED,
            **at("body", {"string": IMPLEMENTED, "bytes": UNSUPPORTED}),
        },
    ),
    "delegate": REPORTED,  # an error: the route would mean something else
    **at(
        "rewrite",
        {
            **every(IMPLEMENTED, "uri", "authority"),
            **at("uriRegexRewrite", every(IMPLEMENTED, "match", "rewrite")),
        },
    ),
    **at(
        "retries",
        {
            **every(
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
    **at(
        "fault",
        {
            **at(
                "delay",
                {
                    **every(IMPLEMENTED, "fixedDelay", "percent"),
                    **at("percentage", PERCENT),
                    "exponentialDelay": UNSUPPORTED,
                },
            ),
            **at(
                "abort",
                {
                    "httpStatus": IMPLEMENTED,
                    **at("percentage", PERCENT),
                    **every(UNSUPPORTED, "grpcStatus", "http2Error"),
                },
            ),
        },
    ),
    **at("mirror", DESTINATION),
    **at("mirrorPercentage", PERCENT),
    **every(UNSUPPORTED, "mirrorPercent", "mirror_percent", "mirrors[]"),
    **at(
        "corsPolicy",
        {
            **at("allowOrigins[]", STRING_MATCH),
            **every(
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
    **at("headers", HEADERS),
}
# TCP routes are translated for gateways only: the port decides.
_TCP_ROUTE: Fields = {
    **at(
        "match[]",
        {
            "port": IMPLEMENTED,
            **every(
                UNSUPPORTED,
                "sourceLabels",
                "gateways",
                "destinationSubnets",
                "sourceNamespace",
                "sourceSubnet",
            ),
        },
    ),
    **at("route[]", {**at("destination", DESTINATION), "weight": IMPLEMENTED}),
}
VIRTUAL_SERVICE: Fields = {
    **every(IMPLEMENTED, "hosts", "gateways", "exportTo"),
    **at("http[]", _HTTP_ROUTE),
    **at("tcp[]", _TCP_ROUTE),
    "tls[]": REPORTED,  # an error
}

# -- DestinationRule ---------------------------------------------------------

_LOAD_BALANCER: Fields = {
    "simple": IMPLEMENTED,
    **at(
        "consistentHash",
        {
            **every(IMPLEMENTED, "httpHeaderName", "useSourceIp", "httpQueryParameterName"),
            **at(
                "httpCookie",
                {**every(IMPLEMENTED, "name", "path", "ttl"), "attributes[]": UNSUPPORTED},
            ),
            "minimumRingSize": IMPLEMENTED,
            **at("ringHash", every(IMPLEMENTED, "minimumRingSize")),
            "maglev": UNSUPPORTED,
        },
    ),
    **every(UNSUPPORTED, "localityLbSetting", "warmupDurationSecs", "warmup", "zoneAwareLbSetting"),
}
_CONNECTION_POOL: Fields = {
    **at(
        "tcp",
        {
            **every(IMPLEMENTED, "maxConnections", "connectTimeout"),
            **every(UNSUPPORTED, "tcpKeepalive", "maxConnectionDuration", "idleTimeout"),
        },
    ),
    **at(
        "http",
        {
            **every(
                IMPLEMENTED,
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "idleTimeout",
            ),
            "h2UpgradePolicy": unsupported_unless("DEFAULT", "DO_NOT_UPGRADE"),
            "useClientProtocol": unsupported_unless(False),
            **every(UNSUPPORTED, "maxConcurrentStreams", "http2KeepAlive"),
        },
    ),
}
_OUTLIER_DETECTION: Fields = {
    **every(
        IMPLEMENTED,
        "consecutiveErrors",  # deprecated: read as consecutive5xxErrors, with a warning
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
        "minHealthPercent",
    ),
    **every(
        UNSUPPORTED,
        "consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
        "outlierDetectionHttpErrorCodes",
    ),
}
_CLIENT_TLS: Fields = {
    **every(
        IMPLEMENTED,
        "mode",
        "clientCertificate",
        "privateKey",
        "caCertificates",
        "sni",
        "subjectAltNames",
    ),
    **every(UNSUPPORTED, "credentialName", "insecureSkipVerify", "caCrl"),
}
_PORT_TRAFFIC_POLICY: Fields = {
    **at("loadBalancer", _LOAD_BALANCER),
    **at("connectionPool", _CONNECTION_POOL),
    **at("outlierDetection", _OUTLIER_DETECTION),
    **at("tls", _CLIENT_TLS),
}
_TRAFFIC_POLICY: Fields = {
    **_PORT_TRAFFIC_POLICY,
    **at("portLevelSettings[]", {**at("port", PORT_SELECTOR), **_PORT_TRAFFIC_POLICY}),
    **every(UNSUPPORTED, "tunnel", "proxyProtocol", "retryBudget"),
}
DESTINATION_RULE: Fields = {
    "host": IMPLEMENTED,
    **at("trafficPolicy", _TRAFFIC_POLICY),
    **at(
        "subsets[]",
        {**every(IMPLEMENTED, "name", "labels"), **at("trafficPolicy", _TRAFFIC_POLICY)},
    ),
    # Read, but every rule applies to every namespace (Istio's default).
    "exportTo": unsupported_unless(("*",)),
    "workloadSelector": UNSUPPORTED,
}

# -- Gateway -----------------------------------------------------------------

GATEWAY: Fields = {
    "selector": IMPLEMENTED,
    **at(
        "servers[]",
        {
            **at(
                "port",
                {**every(IMPLEMENTED, "number", "protocol", "name"), "targetPort": UNSUPPORTED},
            ),
            **every(IMPLEMENTED, "hosts", "name"),
            **every(UNSUPPORTED, "bind", "defaultEndpoint"),
            **at(
                "tls",
                {
                    **every(
                        IMPLEMENTED, "mode", "serverCertificate", "privateKey", "caCertificates"
                    ),
                    **every(
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
    **every(IMPLEMENTED, "address", "ports", "labels", "weight", "serviceAccount"),
    **every(UNSUPPORTED, "network", "locality"),
}
SERVICE_ENTRY: Fields = {
    **every(IMPLEMENTED, "hosts", "location", "resolution", "exportTo"),
    **at("ports[]", every(IMPLEMENTED, "number", "protocol", "name", "targetPort")),
    **at("endpoints[]", _WORKLOAD),
    **at("workloadSelector", every(IMPLEMENTED, "labels")),
    # Read, but routing is by host name: no virtual IPs.
    **every(UNSUPPORTED, "addresses", "subjectAltNames"),
}
WORKLOAD_ENTRY: Fields = _WORKLOAD
# Kubernetes' ServiceSpec (core/v1): only ports and selector define a service.
KUBERNETES_SERVICE: Fields = {
    **at(
        "ports[]",
        {**every(IMPLEMENTED, "name", "port", "targetPort", "protocol", "appProtocol")},
    ),
    "ports[].nodePort": INERT,
    "selector": IMPLEMENTED,
    **every(
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

SIDECAR: Fields = {
    **at("workloadSelector", every(IMPLEMENTED, "labels")),
    "ingress[]": REPORTED,  # a warning
    **at(
        "egress[]",
        {"hosts": IMPLEMENTED, **every(UNSUPPORTED, "port", "bind", "captureMode")},
    ),
    **at("outboundTrafficPolicy", {"mode": IMPLEMENTED, "egressProxy": UNSUPPORTED}),
    "inboundConnectionPool": UNSUPPORTED,
}
