"""Field names as Istio's protojson decoding reads them: the lowerCamelCase
JSON name or the proto's own snake_case name, for every declared field of
every kind, without a word; a name that is neither stays unknown."""

from __future__ import annotations

import pytest

from sailplane.config.fieldcheck import split_path
from sailplane.config.fields import DECLARED
from sailplane.config.loader import load_texts
from sailplane.config.reader import json_name
from sailplane.model.source import Severity
from tests.support.registry import BACKEND_V1

REGISTRY = "\n" + BACKEND_V1


def snake(name: str) -> str:
    """The proto name protoc would have derived ``name`` from (for a test)."""
    out = ""
    for i, c in enumerate(name):
        if c.isupper() or (c.isdigit() and i and not name[i - 1].isdigit()):
            out += "_"
        out += c.lower()
    return out


@pytest.mark.parametrize(
    ("proto", "json"),
    [
        ("custom_tags", "customTags"),
        ("consecutive_5xx_errors", "consecutive5xxErrors"),
        ("http1_max_pending_requests", "http1MaxPendingRequests"),
        ("h2_upgrade_policy", "h2UpgradePolicy"),
        ("mode", "mode"),
    ],
)
def test_json_names_as_protoc_derives_them(proto: str, json: str) -> None:
    assert json_name(proto) == json


def test_every_declared_field_has_a_snake_case_spelling_that_maps_back() -> None:
    """The proto name of every declared camelCase field maps to it (so the
    field check and the readers accept it for every kind)."""
    for kind in DECLARED.values():
        for path in kind.fields:
            for name, _ in split_path(path):
                if any(c.isupper() for c in name):
                    assert json_name(snake(name)) == name, (kind.kind, path)


def load(*texts: str) -> tuple[list[str], object]:
    result = load_texts(
        [("registry.yaml", REGISTRY)] + [(f"t{i}.yaml", t) for i, t in enumerate(texts)]
    )
    assert result.mesh is not None
    return [d.format() for d in result.diagnostics], result.mesh


DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  traffic_policy:
    connection_pool:
      http: {http1_max_pending_requests: 7}
    outlier_detection: {consecutive_5xx_errors: 3, base_ejection_time: 30s}
"""


def test_snake_case_fields_are_read_without_a_word() -> None:
    problems, mesh = load(DR)
    assert problems == []
    (rule,) = mesh.destination_rules  # type: ignore[attr-defined]
    policy = rule.policy(5000, "")
    assert policy.connection_pool.http1_max_pending_requests == 7
    assert policy.outlier_detection.consecutive_5xx_errors == 3


def test_the_corpus_tracing_example_reads_custom_tags() -> None:
    problems, mesh = load(
        """
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - custom_tags:
      my_tag_header:
        header: {name: x-client, default_value: none}
"""
    )
    assert problems == []
    (telemetry,) = mesh.telemetries  # type: ignore[attr-defined]
    (tag,) = telemetry.tracing[0].custom_tags
    assert (tag.name, tag.source, tag.value, tag.default) == (
        "my_tag_header",
        "header",
        "x-client",
        "none",
    )


def test_a_name_that_is_neither_spelling_is_still_unknown() -> None:
    problems, _ = load(DR.replace("consecutive_5xx_errors", "consecutive_5xx_error"))
    assert any("unknown field 'consecutive_5xx_error'" in p for p in problems), problems


def test_both_spellings_at_once_are_an_error_at_the_second() -> None:
    result = load_texts(
        [
            ("registry.yaml", REGISTRY),
            ("dr.yaml", DR.replace("    outlier_", "    outlierDetection: {}\n    outlier_")),
        ]
    )
    found = [d for d in result.diagnostics if "are the same field" in d.message]
    assert found and found[0].severity is Severity.ERROR, [d.format() for d in result.diagnostics]
    assert "spec.traffic_policy.outlier_detection" in found[0].format()


def test_diagnostics_name_the_field_as_written() -> None:
    problems, _ = load(DR.replace("consecutive_5xx_errors: 3", "consecutive_5xx_errors: many"))
    (problem,) = [p for p in problems if "consecutive_5xx_errors" in p]
    assert "t0.yaml:10:" in problem  # the line of the snake_case key
    assert "spec.traffic_policy.outlier_detection.consecutive_5xx_errors" in problem
