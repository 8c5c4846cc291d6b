"""Declarations of the networking kinds: VirtualService, DestinationRule,
Gateway, ServiceEntry, WorkloadEntry, the Kubernetes Service, Sidecar."""

from __future__ import annotations

from sailplane.config.fields.core import (
    DESTINATION,
    HEADERS,
    IMPLEMENTED,
    INERT,
    MATCH_LABELS,
    PERCENT,
    PORT_SELECTOR,
    REJECTED,
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
                    **every(IMPLEMENTED, "httpStatus", "grpcStatus"),
                    **at("percentage", PERCENT),
                    "http2Error": UNSUPPORTED,
                },
            ),
        },
    ),
    **at("mirror", DESTINATION),
    **at("mirrorPercentage", PERCENT),
    # Deprecated (a warning), honoured when mirrorPercentage is not set.
    **every(IMPLEMENTED, "mirrorPercent", "mirror_percent"),
    **at("mirrors[]", {**at("destination", DESTINATION), **at("percentage", PERCENT)}),
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
# TCP routes: at gateways (the port decides) and at transparent sidecars
# (translate/tcproute.py; sourceLabels, gateways, destinationSubnets there).
_TCP_ROUTE: Fields = {
    **at(
        "match[]",
        {
            **every(IMPLEMENTED, "port", "sourceLabels", "gateways", "destinationSubnets"),
            **every(UNSUPPORTED, "sourceNamespace", "sourceSubnet"),
        },
    ),
    **at("route[]", {**at("destination", DESTINATION), "weight": IMPLEMENTED}),
}
# TLS routes: SNI-routed TCP on gateways (PASSTHROUGH servers) and sidecars.
_TLS_ROUTE: Fields = {
    **at(
        "match[]",
        {
            **every(
                IMPLEMENTED, "sniHosts", "port", "gateways", "sourceLabels", "destinationSubnets"
            ),
            **every(UNSUPPORTED, "sourceNamespace"),
        },
    ),
    **at("route[]", {**at("destination", DESTINATION), "weight": IMPLEMENTED}),
}
VIRTUAL_SERVICE: Fields = {
    **every(IMPLEMENTED, "hosts", "gateways", "exportTo"),
    **at("http[]", _HTTP_ROUTE),
    **at("tcp[]", _TCP_ROUTE),
    **at("tls[]", _TLS_ROUTE),
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
    **at(
        "localityLbSetting",
        {
            **every(IMPLEMENTED, "enabled", "failoverPriority"),
            **at("distribute[]", every(IMPLEMENTED, "from", "to")),
            **at("failover[]", every(IMPLEMENTED, "from", "to")),
        },
    ),
    **every(UNSUPPORTED, "warmupDurationSecs", "warmup", "zoneAwareLbSetting"),
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
            "h2UpgradePolicy": IMPLEMENTED,
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
        "credentialName",
    ),
    **every(UNSUPPORTED, "insecureSkipVerify", "caCrl"),
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
    **at("workloadSelector", MATCH_LABELS),
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
                        IMPLEMENTED,
                        "mode",
                        "serverCertificate",
                        "privateKey",
                        "caCertificates",
                        "credentialName",
                    ),
                    **every(
                        UNSUPPORTED,
                        "httpsRedirect",
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
    **every(IMPLEMENTED, "address", "ports", "labels", "weight", "serviceAccount", "locality"),
    "network": UNSUPPORTED,
}
SERVICE_ENTRY: Fields = {
    **every(IMPLEMENTED, "hosts", "location", "resolution", "exportTo"),
    **at("ports[]", every(IMPLEMENTED, "number", "protocol", "name", "targetPort")),
    **at("endpoints[]", _WORKLOAD),
    **at("workloadSelector", every(IMPLEMENTED, "labels")),
    # addresses: what a transparent sidecar matches a connection's destination
    # by (translate/transparent_outbound.py); the HTTP proxy routes by host.
    "addresses": IMPLEMENTED,
    "subjectAltNames": UNSUPPORTED,
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
    **at(
        "ingress[]",
        {
            **at(
                "port",
                {**every(IMPLEMENTED, "number", "protocol", "name"), "targetPort": REPORTED},
            ),
            "defaultEndpoint": IMPLEMENTED,
            # sailplane binds the workload's address, and captures nothing.
            **every(UNSUPPORTED, "bind", "captureMode", "connectionPool"),
            **at(
                "tls",
                {
                    **every(
                        IMPLEMENTED, "mode", "serverCertificate", "privateKey", "caCertificates"
                    ),
                    # Errors in Istio's validation too (the parser's words).
                    **every(
                        REPORTED,
                        "subjectAltNames",
                        "httpsRedirect",
                        "credentialName",
                        "credentialNames",
                        "tlsCertificates[]",
                    ),
                    # They narrow who may connect: unsafe to ignore.
                    **every(
                        REJECTED,
                        "caCrl",
                        "caCertCredentialName",
                        "cipherSuites",
                        "minProtocolVersion",
                        "maxProtocolVersion",
                        "verifyCertificateHash",
                        "verifyCertificateSpki",
                    ),
                    "insecureSkipVerify": UNSUPPORTED,  # a client setting
                },
            ),
        },
    ),
    **at(
        "egress[]",
        {"hosts": IMPLEMENTED, **every(UNSUPPORTED, "port", "bind", "captureMode")},
    ),
    **at("outboundTrafficPolicy", {"mode": IMPLEMENTED, "egressProxy": UNSUPPORTED}),
    "inboundConnectionPool": UNSUPPORTED,
}
