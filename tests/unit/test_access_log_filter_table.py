"""Telemetry ``accessLogging[].filter.expression``: the CEL syntax check, how
filters merge per provider and side (Istio's mergeLogs), and the Envoy
access loggers they gate (Istio's buildAccessLogFilterFromTelemetry), never
sailplane's own stream."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as accesslog_data_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from google.protobuf import json_format

from sailplane.config.assemble import ACTIVE, RETAINED
from sailplane.config.cel import CelSyntaxError, check_cel
from sailplane.config.loader import LoadResult, load_texts
from sailplane.model.sidecar import Provider
from sailplane.model.source import Severity
from sailplane.model.telemetry import telemetry_for
from sailplane.translate import proxy_from_node
from sailplane.translate.telemetry import access_logs
from sailplane.translate.telemetry_export import CEL_FILTER, file_log, otel_log
from tests.support.procs import ENVOY
from tests.unit.test_telemetry import REGISTRY, settings, telemetry

CORPUS = Path(__file__).parents[1] / "data" / "istio-corpus" / "docs-telemetry"
PROVIDERS = settings(
    """
extensionProviders:
- name: errors
  envoyFileAccessLog: {path: /tmp/errors.log}
- name: otel
  envoyOtelAls: {service: collector.istio-system.svc.cluster.local, port: 4317}
"""
)

VALID = [
    "response.code >= 500",
    # docs-telemetry/05, trailing spaces and all
    "response.code >= 400 || xds.cluster_name == 'BlackHoleCluster' ||  "
    "xds.cluster_name == 'PassthroughCluster' ",
    "request.headers['x-user'] == 'admin' && !(response.code < 400)",
    "has(request.headers.foo) ? size(request.path) > 3 : false",
    "request.path.startsWith('/api') || request.path.matches('^/v[0-9]+')",
    "response.code in [500, 502, 503,]",
    "{'a': 1}['a'] == 1u - 0u + 0x0 * 1.5e0",
    "request.duration > duration('1s') // slow ones",
    "'''multi\nline''' != r'\\d' && b'x' != b'y'",
    "google.protobuf.Int64Value{value: 1} != null",
    "[,] == []",
]
INVALID = [
    ("response.code >= (", "expected a value, a name or '('", 19),
    ("response.code >= 500)", "expected an operator or the end", 21),
    ("(response.code", "expected ')'", 15),
    ("response.code = 500", "unexpected character '='", 15),
    ("'unterminated", "unterminated string", 1),
    ("'a\nb' == 'ab'", "unterminated string", 1),
    ("response.code >= 5 00", "found '00'", 20),
    ("a ? b", "expected ':'", 6),
    ("if == 1", "'if' is a reserved word", 1),
    ("x.in", "expected a name", 3),
    ("f(1)", "Envoy's CEL has no function 'f'", 1),
    ("[1].all(x, x > 0)", "no function 'all'", 5),
    ("string(1) == '1'", "no function 'string'", 1),
    ("size(1,)", "expected a value", 8),
    ("a.?b", "expected a name", 3),
    ("", "the expression is empty", 1),
    ("(" * 100 + "1" + ")" * 100, "nested too deeply", 65),
]


@pytest.mark.parametrize("expression", VALID)
def test_valid_expressions_pass(expression: str) -> None:
    check_cel(expression)


@pytest.mark.parametrize(("expression", "message", "column"), INVALID)
def test_invalid_expressions_say_what_and_where(expression: str, message: str, column: int) -> None:
    with pytest.raises(CelSyntaxError, match=re.escape(message)) as e:
        check_cel(expression)
    assert e.value.column + 1 == column


def _validate(expression: str, tmp_path: Path) -> bool:
    """Whether Envoy 1.40 takes a file access log with this CEL filter."""
    log = file_log(Provider("p", "envoyFileAccessLog", path="/dev/null"), False, expression)
    bootstrap = {
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.tcp_proxy",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.tcp_proxy.v3.TcpProxy",
                                        "stat_prefix": "t",
                                        "cluster": "c",
                                        "access_log": [json_format.MessageToDict(log)],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    }
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "-l", "critical"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def test_the_check_agrees_with_envoy(tmp_path: Path) -> None:
    """The lie: the checker passes only what Envoy takes, and the other way
    round (the translated access log, run through `envoy --mode validate`)."""
    for expression in VALID[:4]:
        assert _validate(expression, tmp_path), expression
    for expression, _, _ in INVALID[:12]:
        assert not _validate(expression, tmp_path), expression


def _load(*texts: str, previous: LoadResult | None = None) -> LoadResult:
    files = [("registry.yaml", REGISTRY), ("mesh.yaml", PROVIDERS)]
    files += [(f"t{i}.yaml", t) for i, t in enumerate(texts)]
    return load_texts(files, previous=previous.in_force() if previous else None)


def _filters(result: LoadResult) -> dict[tuple[str, bool], str]:
    assert result.mesh is not None
    proxy = proxy_from_node("backend-v1.default", {}, result.mesh)
    plan = telemetry_for(result.mesh, proxy.workload)
    return {
        (p.name, outbound): plan.log_filter(p, outbound)
        for p, _ in (*plan.file_logs, *plan.otel_logs)
        for outbound in (True, False)
    }


def test_the_corpus_filters_load_without_a_word() -> None:
    for name in ("04-logs-filter-cel.yaml", "05-logs-default-filter-cel.yaml"):
        result = load_texts([(name, (CORPUS / name).read_text())])
        assert [d.format() for d in result.diagnostics if "filter" in d.message] == []


MERGES = [
    # (accessLogging entries, expected (provider, outbound) -> expression)
    (
        "- providers: [{name: errors}]\n  filter: {expression: response.code >= 500}",
        {("errors", True): "response.code >= 500", ("errors", False): "response.code >= 500"},
    ),
    (  # per side, as Istio's per-mode mergeLogs
        "- providers: [{name: errors}]\n  match: {mode: SERVER}\n"
        "  filter: {expression: response.code >= 500}\n"
        "- providers: [{name: errors}]\n  match: {mode: CLIENT}",
        {("errors", True): "", ("errors", False): "response.code >= 500"},
    ),
    (  # a later entry naming the provider without a filter drops it (Istio too)
        "- providers: [{name: otel}]\n  filter: {expression: response.code >= 500}\n"
        "- providers: [{name: otel}]",
        {("otel", True): "", ("otel", False): ""},
    ),
]


@pytest.mark.parametrize(("entries", "expected"), MERGES)
def test_filters_merge_per_provider_and_side(
    entries: str, expected: dict[tuple[str, bool], str]
) -> None:
    result = _load(telemetry(f"accessLogging:\n{entries}"))
    assert _filters(result) == expected


def test_a_bad_expression_is_an_error_at_its_field_and_the_last_good_stays() -> None:
    good = _load(
        telemetry("accessLogging:\n- providers: [{name: errors}]\n  filter: {expression: 'true'}")
    )
    assert _filters(good)[("errors", False)] == "true"
    bad = _load(
        telemetry(
            "accessLogging:\n- providers: [{name: errors}]\n"
            "  filter: {expression: 'response.code >= (500'}"
        ),
        previous=good,
    )
    errors = [d for d in bad.diagnostics if d.severity is Severity.ERROR]
    assert [e.format() for e in errors] == [
        "t0.yaml:7:26: Telemetry istio-system/t: spec.accessLogging[0].filter.expression: "
        "access log filter 'response.code >= (500' is not a CEL expression Envoy takes: "
        "expected ')', found the end of the expression (column 22)"
    ]
    assert {o.name: o.state for o in bad.objects if o.kind == "Telemetry"} == {"t": RETAINED}
    assert _filters(bad)[("errors", False)] == "true"  # never the bad one
    fixed = _load(
        telemetry("accessLogging:\n- providers: [{name: errors}]\n  filter: {expression: 'false'}"),
        previous=bad,
    )
    assert {o.name: o.state for o in fixed.objects if o.kind == "Telemetry"} == {"t": ACTIVE}
    assert _filters(fixed)[("errors", False)] == "false"


def test_a_filter_on_the_sailplane_provider_is_a_warning() -> None:
    result = _load(
        telemetry("accessLogging:\n- providers: [{name: sailplane}]\n  filter: {expression: 'x'}")
    )
    (warning,) = [d for d in result.diagnostics if "takes no filter" in d.message]
    assert warning.severity is Severity.WARNING


def _cel(log: accesslog_pb2.AccessLogFilter) -> str:
    assert log.extension_filter.name == CEL_FILTER
    config = cel_pb2.ExpressionFilter()
    log.extension_filter.typed_config.Unpack(config)
    return str(config.expression)


FILE = Provider("errors", "envoyFileAccessLog", path="/tmp/x.log")
OTEL = Provider("otel", "envoyOtelAls", service="collector", port=4317)


@pytest.mark.parametrize("provider", [FILE, OTEL])
def test_the_logger_carries_the_filter(provider: Provider) -> None:
    build = file_log if provider is FILE else otel_log
    assert not build(provider, False, "").HasField("filter")
    http = build(provider, False, "response.code >= 500")
    assert _cel(http.filter) == "response.code >= 500"
    tcp = build(provider, True, "response.code >= 500")  # as Istio: AND with the TCP filter
    first, second = tcp.filter.and_filter.filters
    assert list(first.log_type_filter.types) == [accesslog_data_pb2.TcpConnectionEnd]
    assert _cel(second) == "response.code >= 500"


@pytest.mark.parametrize("http", [True, False])
def test_sailplanes_stream_is_never_filtered(http: bool) -> None:
    result = _load(
        telemetry(
            "accessLogging:\n- providers: [{name: errors}, {name: otel}, {name: sailplane}]\n"
            "  filter: {expression: response.code >= 500}"
        )
    )
    assert result.mesh is not None
    proxy = proxy_from_node("backend-v1.default", {}, result.mesh)
    plan = telemetry_for(result.mesh, proxy.workload)
    logs = access_logs(proxy, plan, outbound=False, http=http)
    names = [log.name for log in logs]
    grpc = "envoy.access_loggers.http_grpc" if http else "envoy.access_loggers.tcp_grpc"
    assert names == ["envoy.access_loggers.file", "envoy.access_loggers.open_telemetry", grpc]
    assert not logs[-1].HasField("filter")
    for log in logs[:2]:
        cel = log.filter if http else log.filter.and_filter.filters[1]
        assert _cel(cel) == "response.code >= 500"
