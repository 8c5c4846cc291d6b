"""Telemetry ``metrics[].overrides[]``: per-metric ``disabled`` and
``tagOverrides``, merged across scopes as Istio's mergeMetrics does, and
applied to the series sailplane computes from the access log stream."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from prometheus_client.parser import text_string_to_metric_families

from sailplane.config.loader import load_texts
from sailplane.config.telemetry_metrics import parse_tag_value
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Severity
from sailplane.model.telemetry import (
    STANDARD_METRICS,
    Directions,
    MetricShape,
    TagOverride,
    TagValue,
    WorkloadTelemetry,
    telemetry_for,
)
from sailplane.telemetry import AccessLogReceiver, IstioMetrics, StreamState
from sailplane.translate.telemetry import (
    LOG_INBOUND,
    LOG_OUTBOUND,
    METADATA_NAMESPACE,
    UPSTREAM_PEER,
    access_logs,
)

BACKEND = "backend.default.svc.cluster.local"
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
metadata: {name: frontend}
spec: {address: 10.0.0.10, serviceAccount: frontend, labels: {app: frontend, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec: {address: 10.0.0.1, serviceAccount: backend, labels: {app: backend, version: v1}}
"""


def telemetry(spec: str, name: str = "t", namespace: str = "istio-system") -> str:
    indented = "\n".join("  " + line for line in spec.strip().splitlines())
    return (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{indented}\n"
    )


def load(*texts: str) -> tuple[MeshConfig, list[str]]:
    result = load_texts(
        [("registry.yaml", REGISTRY)] + [(f"t{i}.yaml", t) for i, t in enumerate(texts)]
    )
    assert result.mesh is not None
    return result.mesh, [d.format() for d in result.diagnostics]


def plan(*texts: str, node: str = "backend-v1.default") -> WorkloadTelemetry:
    mesh, problems = load(*texts)
    assert not problems, problems
    return telemetry_for(mesh, mesh.workloads_by_id[node])


def override(body: str) -> str:
    return telemetry(
        "metrics:\n- providers: [{name: prometheus}]\n  overrides:\n"
        + "\n".join("  " + line for line in body.strip().splitlines())
    )


# -- merging (model) ------------------------------------------------------------------

ALL = frozenset(STANDARD_METRICS)
REMOVE_GRPC = (TagOverride("grpc_response_status", remove=True),)


@pytest.mark.parametrize(
    ("body", "sides", "client", "server"),
    [
        (  # docs-telemetry/06
            "- match: {mode: CLIENT_AND_SERVER, metric: REQUEST_COUNT}\n"
            "  tagOverrides: {grpc_response_status: {operation: REMOVE}}",
            Directions(),
            MetricShape(tags=(("REQUEST_COUNT", REMOVE_GRPC),)),
            MetricShape(tags=(("REQUEST_COUNT", REMOVE_GRPC),)),
        ),
        (  # docs-telemetry/08
            "- {disabled: true, match: {mode: CLIENT_AND_SERVER, metric: ALL_METRICS}}",
            Directions(False, False),
            MetricShape(),
            MetricShape(),
        ),
        (  # docs-telemetry/09
            "- {disabled: true, match: {mode: CLIENT_AND_SERVER, metric: REQUEST_COUNT}}",
            Directions(),
            MetricShape(frozenset({"REQUEST_COUNT"})),
            MetricShape(frozenset({"REQUEST_COUNT"})),
        ),
        (  # docs-telemetry/10
            "- {disabled: true, match: {mode: CLIENT, metric: REQUEST_COUNT}}",
            Directions(),
            MetricShape(frozenset({"REQUEST_COUNT"})),
            MetricShape(),
        ),
        (  # docs-telemetry/11
            "- {disabled: true, match: {mode: SERVER, metric: REQUEST_COUNT}}",
            Directions(),
            MetricShape(),
            MetricShape(frozenset({"REQUEST_COUNT"})),
        ),
        (  # no match at all: every metric, both sides
            "- {disabled: true}",
            Directions(False, False),
            MetricShape(),
            MetricShape(),
        ),
        (  # the stats filter's own name of a standard metric
            "- {disabled: true, match: {customMetric: request_bytes}}",
            Directions(),
            MetricShape(frozenset({"REQUEST_SIZE"})),
            MetricShape(frozenset({"REQUEST_SIZE"})),
        ),
        (  # a later override re-enables what an earlier one dropped
            "- {disabled: true, match: {metric: REQUEST_COUNT}}\n"
            "- {disabled: false, match: {metric: REQUEST_COUNT, mode: SERVER}}",
            Directions(),
            MetricShape(frozenset({"REQUEST_COUNT"})),
            MetricShape(),
        ),
    ],
    ids=[
        "remove-tag",
        "disable-all",
        "disable-count",
        "disable-client",
        "disable-server",
        "no-match",
        "custom-name",
        "later-wins",
    ],
)
def test_overrides_merge_per_side_and_metric(
    body: str, sides: Directions, client: MetricShape, server: MetricShape
) -> None:
    found = plan(override(body))
    assert found.metrics == sides
    if sides.client:
        assert found.client_metrics == client
    if sides.server:
        assert found.server_metrics == server


def test_scopes_merge_as_istio_mesh_off_namespace_back_on() -> None:
    mesh_off = override("- {disabled: true, match: {metric: ALL_METRICS}}")
    namespace_on = telemetry(
        "metrics:\n- overrides:\n  - match: {metric: REQUEST_COUNT, mode: SERVER}\n"
        "    tagOverrides: {team: {value: \"'shop'\"}}",
        name="ns",
        namespace="default",
    )
    found = plan(mesh_off, namespace_on)
    # Istio: naming metrics for a side again lifts the mesh's "all off" there only.
    assert found.metrics == Directions(client=False, server=True)
    team = TagOverride("team", value=TagValue("", "shop"))
    assert found.server_metrics.tags_of("REQUEST_COUNT") == (team,)
    assert found.server_metrics.tags_of("REQUEST_DURATION") == ()


def test_a_metrics_entry_for_another_provider_changes_nothing_here() -> None:
    found = plan(
        telemetry(
            "metrics:\n- providers: [{name: prometheus}]\n"
            "- providers: [{name: prometheus}]\n  overrides: [{disabled: true}]"
        )
    )
    assert found.metrics == Directions(False, False)


# -- tag values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'shop'", TagValue("", "shop")),
        ('"shop"', TagValue("", "shop")),
        ("request.host", TagValue("request.host")),
        ("request.headers['X-User']", TagValue("request.headers", "X-User")),
        ('response.headers["x-cache"]', TagValue("response.headers", "x-cache")),
        ("upstream_peer.labels['app'].value", TagValue("upstream_peer.labels", "app")),
        ("downstream_peer.labels['app']", TagValue("downstream_peer.labels", "app")),
        ("upstream_peer.version", TagValue("upstream_peer.version")),
        ("request.headers['a'].value", None),
        ("request.host + 'x'", None),
        ("has(request.host) ? 'y' : 'n'", None),
        ("xds.node.metadata['NAME']", None),
    ],
)
def test_tag_values_sailplane_evaluates(text: str, expected: TagValue | None) -> None:
    assert parse_tag_value(text) == expected


@pytest.mark.parametrize(
    ("tags", "message", "severity"),
    [
        ("{x: {operation: UPSERT}}", "value must be set when operation is UPSERT", Severity.ERROR),
        ("{x: {operation: REMOVE, value: \"'a'\"}}", "may only be set when", Severity.ERROR),
        ("{x: {value: \"request.host + 'a'\"}}", "cannot evaluate", Severity.WARNING),
        ("{x: {operation: DROP}}", "unknown value 'DROP'", Severity.ERROR),
        ("{x-y: {value: \"'a'\"}}", "not a Prometheus label name", Severity.WARNING),
    ],
    ids=["upsert-no-value", "remove-value", "cel", "operation", "name"],
)
def test_bad_tag_overrides_are_reported(tags: str, message: str, severity: Severity) -> None:
    result = load_texts(
        [("registry.yaml", REGISTRY), ("t.yaml", override(f"- tagOverrides: {tags}"))]
    )
    found = [d for d in result.diagnostics if message in d.message]
    assert found, [d.format() for d in result.diagnostics]
    assert found[0].severity is severity
    assert "spec.metrics[0].overrides[0].tagOverrides.x" in found[0].format()
    assert found[0].file == "t.yaml"


def test_a_custom_metric_sailplane_does_not_define_is_a_warning() -> None:
    _, problems = load(override("- {disabled: true, match: {customMetric: my_metric}}"))
    assert any("'my_metric' is not one of Istio's standard metrics" in p for p in problems)


def test_the_corpus_overrides_load_without_a_word() -> None:
    for body in (
        "- match: {metric: REQUEST_COUNT, mode: CLIENT}\n"
        "  tagOverrides: {destination_x: {value: \"upstream_peer.labels['app'].value\"}}",
        "- match: {mode: CLIENT_AND_SERVER, metric: REQUEST_COUNT}\n"
        "  tagOverrides: {grpc_response_status: {operation: REMOVE}}",
    ):
        _, problems = load(override(body))
        assert problems == []


# -- applied to entries --------------------------------------------------------------


def http_entry(header: str = "", peer: bool = True) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    common.upstream_cluster = f"outbound|5000||{BACKEND}"
    common.upstream_remote_address.socket_address.address = "10.0.0.1"
    common.downstream_remote_address.socket_address.address = "10.0.0.10"
    common.duration.FromMilliseconds(7)
    if peer:
        common.metadata.filter_metadata[METADATA_NAMESPACE].update(
            {UPSTREAM_PEER: "backend-v1.default"}
        )
    entry.request.authority = "backend:5000"
    if header:
        entry.request.request_headers["x-user"] = header
    entry.response.response_code.value = 200
    return entry


def series(
    *texts: str, entries: list[accesslog_pb2.HTTPAccessLogEntry], log: str = LOG_OUTBOUND
) -> list[Any]:
    mesh, _ = load(*texts)
    target = AccessLogReceiver(lambda: mesh, IstioMetrics())
    node = "frontend.default" if log == LOG_OUTBOUND else "backend-v1.default"
    target.receive(StreamState(node_id=node, outbound=log == LOG_OUTBOUND), _message(entries))
    text = target.metrics.render().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def _message(entries: list[accesslog_pb2.HTTPAccessLogEntry]) -> Any:
    from envoy.service.accesslog.v3 import als_pb2

    msg = als_pb2.StreamAccessLogsMessage()
    msg.http_logs.log_entry.extend(entries)
    return msg


def names(found: list[Any]) -> set[str]:
    return {s.name for s in found}


def test_a_disabled_client_request_count_leaves_the_histograms_and_the_server_side() -> None:
    disable = override("- {disabled: true, match: {mode: CLIENT, metric: REQUEST_COUNT}}")
    client = series(disable, entries=[http_entry()])
    assert "istio_requests_total" not in names(client)
    assert "istio_request_duration_milliseconds_count" in names(client)
    assert "istio_response_bytes_count" in names(client)
    server = series(disable, entries=[http_entry()], log=LOG_INBOUND)
    assert any(
        s.name == "istio_requests_total" and s.labels["reporter"] == "destination" for s in server
    )


def test_remove_and_upsert_change_only_the_named_metric() -> None:
    shaped = override(
        "- match: {metric: REQUEST_COUNT}\n"
        "  tagOverrides:\n"
        "    grpc_response_status: {operation: REMOVE}\n"
        "    user: {value: \"request.headers['X-User']\"}\n"
        "    destination_app: {value: \"'renamed'\"}\n"
        "    destination_x: {value: \"upstream_peer.labels['app'].value\"}\n"
        "    source_x: {value: \"downstream_peer.labels['app'].value\"}"
    )
    found = series(shaped, entries=[http_entry("alice"), http_entry()])
    counts = [s for s in found if s.name == "istio_requests_total"]
    assert sorted(s.labels["user"] for s in counts) == ["alice", "unknown"]
    for sample in counts:
        assert "grpc_response_status" not in sample.labels
        assert sample.labels["destination_app"] == "renamed"  # replaced in place
        assert sample.labels["destination_x"] == "backend"  # the upstream peer's label
        assert sample.labels["source_x"] == "unknown"  # no downstream peer on the client side
    durations = [s for s in found if s.name == "istio_request_duration_milliseconds_count"]
    assert durations and all("user" not in s.labels for s in durations)
    assert all(s.labels["grpc_response_status"] == "" for s in durations)
    assert all(s.labels["destination_app"] == "backend" for s in durations)


def test_headers_a_tag_reads_are_added_to_the_access_log_stream() -> None:
    from sailplane.translate import proxy_from_node

    mesh, _ = load(
        override("- tagOverrides: {user: {value: \"request.headers['X-User']\"}}"),
    )
    found = telemetry_for(mesh, mesh.workloads_by_id["frontend.default"])
    proxy = proxy_from_node("frontend.default", {}, mesh)
    (stream,) = access_logs(proxy, found, outbound=True)
    from envoy.extensions.access_loggers.grpc.v3 import als_pb2

    config = als_pb2.HttpGrpcAccessLogConfig()
    stream.typed_config.Unpack(config)
    assert list(config.additional_request_headers_to_log) == ["content-type", "x-user"]
