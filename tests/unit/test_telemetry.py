"""The Telemetry API: parsing, scoping (mesh < namespace < workload), and what
it puts on a proxy's listeners and clusters."""

from __future__ import annotations

import pytest

from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Severity
from sailplane.model.telemetry import NOWHERE, Directions, WorkloadTelemetry, telemetry_for
from sailplane.translate import build_proxy_resources, proxy_from_node
from sailplane.translate.bootstrap import XDS_CLUSTER
from sailplane.translate.telemetry import ALS_CLUSTER, LOG_INBOUND, LOG_OUTBOUND, PEER_HEADER

REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}, {name: tcp-db, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec: {address: 10.0.0.1, labels: {app: backend, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: client}}
"""


def mesh_of(*texts: str) -> MeshConfig:
    result = load_texts(
        [("registry.yaml", REGISTRY)] + [(f"t{i}.yaml", t) for i, t in enumerate(texts)]
    )
    assert result.mesh is not None, [d.format() for d in result.diagnostics]
    return result.mesh


def settings(body: str) -> str:
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        f"data:\n  mesh: |\n{indented}\n"
    )


def telemetry(spec: str, name: str = "t", namespace: str = "istio-system") -> str:
    indented = "\n".join("  " + line for line in spec.strip().splitlines())
    return (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{indented}\n"
    )


def plan(mesh: MeshConfig, node: str = "backend-v1.default") -> WorkloadTelemetry:
    return telemetry_for(mesh, mesh.workloads_by_id[node])


OTEL = settings(
    """
extensionProviders:
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
- name: zipkin
  zipkin: {service: zipkin.observability, port: 9411}
"""
)


def test_defaults_are_istios_metrics_on_logs_and_tracing_off() -> None:
    found = plan(mesh_of())
    assert found.metrics == Directions()
    assert found.file_logs == () and found.sailplane_logs == NOWHERE
    assert found.tracing is None
    assert found.reporting_interval == 5.0


def test_access_log_file_in_mesh_settings_turns_on_envoy_logs_everywhere() -> None:
    found = plan(mesh_of(settings("accessLogFile: /dev/stdout\naccessLogEncoding: JSON")))
    ((provider, sides),) = found.file_logs
    assert (provider.name, provider.path, provider.encoding) == ("envoy", "/dev/stdout", "JSON")
    assert sides == Directions()


def test_more_specific_telemetry_wins_per_section() -> None:
    mesh = mesh_of(
        OTEL,
        telemetry(
            """
tracing:
- providers: [{name: otel}]
  randomSamplingPercentage: 25
accessLogging:
- providers: [{name: envoy}]
"""
        ),
        telemetry(
            """
selector: {matchLabels: {app: backend}}
tracing:
- providers: [{name: zipkin}]
accessLogging:
- providers: [{name: sailplane}]
  match: {mode: SERVER}
metrics:
- overrides:
  - match: {mode: CLIENT}
    disabled: true
  reportingInterval: 2s
""",
            name="backend",
            namespace="default",
        ),
    )
    backend = plan(mesh)
    assert backend.tracing is not None
    assert backend.tracing.provider.name == "zipkin"
    assert backend.tracing.sampling == 25  # inherited from the mesh-wide Telemetry
    assert backend.file_logs == ()  # its accessLogging replaces the mesh's
    assert backend.sailplane_logs == Directions(client=False, server=True)
    assert backend.metrics == Directions(client=False, server=True)
    assert backend.reporting_interval == 2.0
    client = plan(mesh, "client.shop")
    assert client.tracing is not None and client.tracing.provider.name == "otel"
    assert [p.name for p, _ in client.file_logs] == ["envoy"]
    assert client.metrics == Directions()


def test_disabled_entries_and_span_reporting_turn_things_off() -> None:
    mesh = mesh_of(
        settings("accessLogFile: /dev/stdout\n" + OTEL.split("|\n", 1)[1]),
        telemetry(
            """
tracing:
- providers: [{name: otel}]
  disableSpanReporting: true
accessLogging:
- providers: [{name: envoy}]
  disabled: true
metrics:
- providers: [{name: prometheus}]
  overrides:
  - disabled: true
"""
        ),
    )
    found = plan(mesh)
    assert found.tracing is None
    assert found.file_logs == ()
    assert found.metrics == NOWHERE
    assert not found.streams_to_sailplane(True) and not found.streams_to_sailplane(False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("accessLogging:\n- providers: [{name: nope}]", "'nope' is not in the mesh's"),
        ("tracing:\n- providers: [{name: envoy}]", "'envoy' is a envoyFileAccessLog provider"),
        ("tracing:\n- randomSamplingPercentage: 120", "not a number from 0 to 100"),
        ("accessLogging:\n- filter: {expression: 'response.code >= (400'}", "not a CEL"),
        ("metrics:\n- reportingInterval: soon", "invalid duration"),
        ("tracing:\n- match: {mode: BOTH}", "unknown value 'BOTH'"),
    ],
    ids=["unknown-provider", "wrong-kind", "sampling", "filter", "interval", "mode"],
)
def test_problems_point_at_the_telemetry(spec: str, message: str) -> None:
    result = load_texts(
        [("registry.yaml", REGISTRY), ("t.yaml", OTEL), ("u.yaml", telemetry(spec))]
    )
    found = [d for d in result.diagnostics if message in d.message]
    assert found, [d.format() for d in result.diagnostics]
    assert found[0].file == "u.yaml"
    assert "Telemetry istio-system/t" in found[0].format()


def test_invalid_telemetry_is_rejected_and_the_rest_applies() -> None:
    result = load_texts(
        [
            ("registry.yaml", REGISTRY),
            ("u.yaml", telemetry("tracing:\n- randomSamplingPercentage: x")),
        ]
    )
    assert result.mesh is not None
    assert result.mesh.telemetries == ()
    assert any(d.severity is Severity.ERROR for d in result.diagnostics)


# -- translation -------------------------------------------------------------------------


def _listeners(mesh: MeshConfig, node: str, metadata: dict[str, str] | None = None) -> list:  # type: ignore[type-arg]
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    proxy = proxy_from_node(node, metadata or {}, mesh)
    out = []
    for listener in build_proxy_resources(mesh, proxy).listeners:
        for chain in listener.filter_chains[:1]:
            for f in chain.filters:
                if f.name.endswith("http_connection_manager"):
                    message = hcm_pb2.HttpConnectionManager()
                elif f.name.endswith("tcp_proxy"):
                    message = tcp_proxy_pb2.TcpProxy()
                else:
                    continue
                f.typed_config.Unpack(message)
                out.append((listener.traffic_direction, message))
    return out


def test_every_listener_streams_to_sailplane_over_the_bootstrap_cluster() -> None:
    assert ALS_CLUSTER == XDS_CLUSTER
    mesh = mesh_of()
    found = _listeners(mesh, "backend-v1.default")
    assert len(found) == 3  # outbound HTTP, inbound HTTP, inbound TCP
    for direction, message in found:
        (log,) = message.access_log
        assert log.typed_config.type_url.endswith(
            "HttpGrpcAccessLogConfig"
            if hasattr(message, "http_filters")
            else "TcpGrpcAccessLogConfig"
        )
        assert (LOG_OUTBOUND if direction == 2 else LOG_INBOUND).encode() in log.typed_config.value
        assert XDS_CLUSTER.encode() in log.typed_config.value
        if hasattr(message, "http_filters"):
            names = [f.name for f in message.http_filters]
            assert names[:2] == ["sailplane.peer.take", "sailplane.peer.send"]
            assert PEER_HEADER.encode() in message.http_filters[1].typed_config.value
        else:
            assert message.access_log_options.flush_access_log_on_connected
            assert message.access_log_options.access_log_flush_interval.seconds == 5


def test_node_metadata_can_name_another_cluster_or_turn_the_stream_off() -> None:
    mesh = mesh_of()
    other = _listeners(mesh, "backend-v1.default", {"sailplane.telemetry_cluster": "cp"})
    assert all(b"cp" in m.access_log[0].typed_config.value for _, m in other)
    assert all(
        not m.access_log
        for _, m in _listeners(mesh, "backend-v1.default", {"sailplane.telemetry_cluster": ""})
    )


def test_tracing_adds_the_tracer_and_its_collector_cluster() -> None:
    mesh = mesh_of(
        OTEL, telemetry("tracing:\n- providers: [{name: otel}]\n  randomSamplingPercentage: 100")
    )
    proxy = proxy_from_node("backend-v1.default", {}, mesh)
    resources = build_proxy_resources(mesh, proxy)
    assert "tracing|otel" in {c.name for c in resources.own_clusters}
    for _, message in _listeners(mesh, "backend-v1.default"):
        if hasattr(message, "tracing"):
            assert message.tracing.provider.name == "envoy.tracers.opentelemetry"
            assert message.tracing.random_sampling.value == 100
