"""Validation checks, one case each: the YAML and the exact line it produces."""

from __future__ import annotations

import textwrap

import pytest

from sailplane.config.loader import load_texts
from sailplane.model.source import Severity
from tests.support.registry import BACKEND_V1

REGISTRY = f"""{BACKEND_V1}---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: gw}}
spec: {{address: 10.0.0.9, labels: {{istio: ingressgateway}}, ports: {{http: 8080}}}}
"""

CASES = {
    "label-value": (
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          selector:
            app: weather backend
          ports: [{name: http, port: 80}]
        """,
        "case.yaml:7:10: IST0106: Service default/web: spec.selector.app: invalid label value "
        "'weather backend': use at most 63 letters, digits, '-', '_' or '.', starting and "
        "ending with a letter or digit, or nothing",
    ),
    "label-key": (
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: w}
        spec:
          address: 10.0.0.5
          labels: {-app: x}
        """,
        "case.yaml:7:18: IST0106: WorkloadEntry default/w: spec.labels.-app: invalid label key "
        "'-app': use at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
        "letter or digit",
    ),
    "object-name": (
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: Backend_Rule}
        spec: {host: backend}
        """,
        "case.yaml:4:18: IST0106: DestinationRule default/Backend_Rule: metadata.name: invalid "
        "name 'Backend_Rule': use lowercase letters, digits, '-' and '.', starting and ending "
        "with a letter or digit",
    ),
    "host-syntax": (
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: [backend]
          http:
          - route: [{destination: {host: back_end}}]
        """,
        "case.yaml:8:34: IST0106: VirtualService default/v: "
        "spec.http[0].route[0].destination.host: invalid host 'back_end': use a DNS name "
        "(letters, digits, '-' and '.'), optionally starting with '*.'",
    ),
    "regex-not-re2": (
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: [backend]
          http:
          - match: [{uri: {regex: "/api/(?!internal).*"}}]
            route: [{destination: {host: backend}}]
        """,
        "case.yaml:8:27: IST0106: VirtualService default/v: spec.http[0].match[0].uri.regex: "
        "invalid regex '/api/(?!internal).*': '(?!' at position 5 is not RE2 syntax (no "
        "lookaround or backreferences)",
    ),
    "misplaced-annotation": (
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          annotations:
            sidecar.istio.io/inject: "true"
        spec:
          selector: {app: web}
          ports: [{name: http, port: 80}]
        """,
        "case.yaml:7:30: warning: IST0107: Service default/web: "
        "metadata.annotations.sidecar.istio.io/inject: misplaced annotation "
        "'sidecar.istio.io/inject': it applies to Pod, not Service",
    ),
    "unknown-annotation": (
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: r
          annotations: {networking.istio.io/exportToo: "."}
        spec: {host: backend}
        """,
        "case.yaml:6:48: warning: IST0108: DestinationRule default/r: "
        "metadata.annotations.networking.istio.io/exportToo: unknown annotation "
        "'networking.istio.io/exportToo' (did you mean 'networking.istio.io/exportTo'?)",
    ),
    "unreachable-rule": (
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: [backend]
          http:
          - route: [{destination: {host: backend}}]
          - match: [{uri: {prefix: /api}}]
            route: [{destination: {host: backend}}]
        """,
        "case.yaml:9:5: warning: IST0130: VirtualService default/v: spec.http[1]: rule #1 is not "
        "used: rule #0 has no match and takes every request (only the last rule can have no "
        "matches)",
    ),
    "duplicate-match": (
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: [backend]
          http:
          - match: [{uri: {prefix: /api}}]
            route: [{destination: {host: backend}}]
          - match: [{name: again, uri: {prefix: /api}}]
            route: [{destination: {host: backend}}]
        """,
        "case.yaml:10:13: warning: IST0131: VirtualService default/v: spec.http[1].match[0]: "
        "rule #1 match #0 is not used (duplicates a match in rule #0 match #0)",
    ),
    "gateway-without-workload": (
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: g}
        spec:
          selector: {istio: egressgateway}
          servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
        """,
        "case.yaml:6:13: warning: IST0101: Gateway default/g: spec.selector: referenced selector "
        "not found: no WorkloadEntry has labels 'istio=egressgateway', so no proxy serves this "
        "gateway",
    ),
    "gateway-port-not-on-workload": (
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: g}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 443, name: https, protocol: TLS}, hosts: ["*"],
                     tls: {mode: PASSTHROUGH}}]
        """,
        "case.yaml:7:20: warning: IST0104: Gateway default/g: spec.servers[0].port: port 443 "
        "(https) is not exposed on workload default/gw (its ports: http=8080)",
    ),
    "rule-for-unknown-host": (
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: r}
        spec: {host: ratings}
        """,
        "case.yaml:5:14: warning: IST0101: DestinationRule default/r: spec.host: no Service or "
        "ServiceEntry defines host 'ratings.default.svc.cluster.local'; this rule applies to "
        "nothing",
    ),
    "second-rule-for-a-host": (
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: a}
        spec: {host: backend, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: b}
        spec: {host: backend.default.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}
        """,
        "case.yaml:10:64: warning: DestinationRule default/b: spec.trafficPolicy: "
        "DestinationRule default/a (written first) has a trafficPolicy for "
        "'backend.default.svc.cluster.local', which is used; this one is not",
    ),
    "type-error-said-once": (
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: backend
          http: [{route: [{destination: {host: backend}}]}]
        """,
        "case.yaml:6:10: IST0106: VirtualService default/v: spec.hosts: must be a list, "
        "not str 'backend'",
    ),
    "indentation": (
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: [backend]
          http:
          - route:
            - destination:
                host: backend
             timeout: 5s
        """,
        "case.yaml:11:6: YAML syntax error: did not find expected key, while parsing a block "
        "mapping that starts at 8:5 (check the indentation of this line)",
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_each_problem_is_one_line_at_the_offending_node(text: str, expected: str) -> None:
    result = load_texts(
        [("case.yaml", textwrap.dedent(text)), ("registry.yaml", REGISTRY)], keep_going=True
    )
    lines = [d.format() for d in result.diagnostics if d.severity is not Severity.INFO]
    assert lines == [expected]


def test_a_valid_mesh_has_nothing_to_say() -> None:
    result = load_texts([("registry.yaml", REGISTRY)])
    assert [d.format() for d in result.diagnostics] == []
