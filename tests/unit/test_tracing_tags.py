"""Telemetry ``tracing[].customTags`` as Istio builds them
(pilot/pkg/networking/core/tracing.go buildCustomTagsFromProvider): one
Envoy ``custom_tags`` entry per tag, sorted by name; a narrower Telemetry's
set replaces the wider one's whole (Istio's shallow merge)."""

from __future__ import annotations

import pytest
from envoy.type.tracing.v3 import custom_tag_pb2

from sailplane.config.loader import load_texts
from sailplane.model.source import Severity
from sailplane.model.telemetry import CustomTag, telemetry_for
from sailplane.translate.proxy import proxy_from_node
from sailplane.translate.telemetry_export import http_tracing

REGISTRY = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend}
spec: {address: 10.0.0.1, labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: client}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: zipkin
      zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"""


def tracing(tags: str, namespace: str = "istio-system", name: str = "t") -> str:
    body = "\n".join("      " + line for line in tags.strip().splitlines())
    return (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  tracing:\n  - providers: [{{name: zipkin}}]\n    customTags:\n{body}\n"
    )


MESH_TAGS = """
cluster_id: {environment: {name: ISTIO_META_CLUSTER_ID, defaultValue: Kubernetes}}
user: {header: {name: x-user}}
team: {literal: {value: weather}}
sni: {formatter: {value: "%REQUESTED_SERVER_NAME%"}}
"""


def envoy_tags(*texts: str, node: str = "backend.default") -> list[custom_tag_pb2.CustomTag]:
    result = load_texts(
        [("registry.yaml", REGISTRY)] + [(f"t{i}.yaml", t) for i, t in enumerate(texts)]
    )
    assert result.mesh is not None
    assert not result.diagnostics, [d.format() for d in result.diagnostics]
    plan = telemetry_for(result.mesh, result.mesh.workloads_by_id[node]).tracing
    assert plan is not None
    return list(http_tracing(proxy_from_node(node, {}, result.mesh), plan).custom_tags)


def test_each_kind_of_tag_becomes_envoys_sorted_by_name() -> None:
    found = envoy_tags(tracing(MESH_TAGS))
    assert [t.tag for t in found] == ["cluster_id", "sni", "team", "user"]
    by_name = {t.tag: t for t in found}
    assert by_name["cluster_id"].environment.name == "ISTIO_META_CLUSTER_ID"
    assert by_name["cluster_id"].environment.default_value == "Kubernetes"
    assert by_name["user"].request_header.name == "x-user"
    assert by_name["team"].literal.value == "weather"
    assert by_name["sni"].value == "%REQUESTED_SERVER_NAME%"


def test_a_namespace_telemetrys_tags_replace_the_meshs() -> None:
    namespace = tracing("tier: {literal: {value: gold}}", namespace="shop", name="shop")
    assert [t.tag for t in envoy_tags(tracing(MESH_TAGS), namespace, node="client.shop")] == [
        "tier"
    ]
    # Another namespace keeps the mesh's.
    assert len(envoy_tags(tracing(MESH_TAGS), namespace)) == 4


@pytest.mark.parametrize(
    ("tags", "message", "severity"),
    [
        ("x: {literal: {value: a}, header: {name: b}}", "needs exactly one of", Severity.ERROR),
        ("x: {}", "needs exactly one of", Severity.ERROR),
        ("x: {literal: {value: ''}}", "literal tag value may not be empty", Severity.ERROR),
        ("x: {environment: {defaultValue: a}}", "environment tag name may not be", Severity.ERROR),
        ('x: {header: {name: "a\\nb"}}', "is not an HTTP header name", Severity.WARNING),
    ],
    ids=["two", "none", "empty-literal", "no-env-name", "newline-header"],
)
def test_bad_tags_are_reported(tags: str, message: str, severity: Severity) -> None:
    result = load_texts([("registry.yaml", REGISTRY), ("t.yaml", tracing(tags))])
    found = [d for d in result.diagnostics if message in d.message]
    assert found, [d.format() for d in result.diagnostics]
    assert found[0].severity is severity
    assert "spec.tracing[0].customTags.x" in found[0].format()


def test_a_placeholder_header_name_is_passed_through_as_envoy_takes_it() -> None:
    # docs-telemetry/15 as published: Envoy's header-name rule is not strict.
    found = envoy_tags(tracing('h: {header: {name: "<CLIENT-HEADER>", defaultValue: "<V>"}}'))
    assert found[0].request_header.name == "<CLIENT-HEADER>"


def test_the_model_keeps_the_source_and_default() -> None:
    result = load_texts([("registry.yaml", REGISTRY), ("t.yaml", tracing(MESH_TAGS))])
    assert result.mesh is not None
    (telemetry,) = result.mesh.telemetries
    tags = telemetry.tracing[0].custom_tags
    assert tags is not None
    assert CustomTag("user", "header", "x-user") in tags
