"""Last good configuration: what a new directory state puts in force.

A state that does not parse changes nothing; an invalid object keeps its last
good version (if there is one) and is reported; deleting an object removes it.
"""

from __future__ import annotations

import textwrap

from sailplane.config.assemble import ACTIVE, IGNORED, REJECTED, RETAINED
from sailplane.config.loader import LoadResult, load_texts, object_changes
from sailplane.model.source import Severity
from tests.support.registry import BACKEND_V1_V2

REGISTRY = "\n" + BACKEND_V1_V2

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def split(v1: int, v2: int, subset2: str = "v2") -> str:
    return textwrap.dedent(
        f"""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: backend}}
        spec:
          hosts: [backend]
          http:
          - route:
            - destination: {{host: backend, subset: v1}}
              weight: {v1}
            - destination: {{host: backend, subset: {subset2}}}
              weight: {v2}
        """
    )


def load(files: dict[str, str], previous: LoadResult | None = None) -> LoadResult:
    in_force = previous.in_force() if previous is not None else None
    return load_texts(sorted(files.items()), previous=in_force)


def weights(result: LoadResult) -> list[int]:
    assert result.mesh is not None
    (vs,) = result.mesh.virtual_services
    return [d.weight for d in vs.http[0].route]


def states(result: LoadResult) -> dict[str, str]:
    return {f"{o.kind}/{o.name}": o.state for o in result.objects}


def test_an_invalid_new_version_keeps_the_last_good_one_in_force() -> None:
    good = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(90, 10)})
    assert weights(good) == [90, 10]
    typo = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(90, 100)}, good)
    assert weights(typo) == [90, 10]  # not round robin over every backend
    assert states(typo)["VirtualService/backend"] == RETAINED
    lines = [d.format() for d in typo.diagnostics]
    assert any("weights sum to 190, not 100" in line for line in lines)
    assert (
        "vs.yaml:2:1: warning: VirtualService default/backend: this version is rejected; "
        "the last good version (vs.yaml:2) stays in force until it is fixed"
    ) in lines
    fixed = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(0, 100)}, typo)
    assert weights(fixed) == [0, 100]
    assert states(fixed)["VirtualService/backend"] == ACTIVE


def test_a_new_object_that_is_invalid_is_simply_not_used() -> None:
    result = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(90, 100)})
    assert result.mesh is not None
    assert result.mesh.virtual_services == ()
    assert states(result)["VirtualService/backend"] == REJECTED
    assert ("VirtualService", "default", "backend") not in {
        (o.kind, o.namespace, o.name) for o in result.mesh.objects
    }


def test_a_reference_error_is_a_warning_as_in_istio() -> None:
    # Istio's webhook checks one object at a time: an unknown subset is an
    # istioctl analyze warning, and the new version is in force (Envoy
    # answers 503 for the missing cluster).
    good = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(50, 50)})
    unknown = load(
        {"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(60, 40, "v3")}, good
    )
    assert weights(unknown) == [60, 40]
    assert states(unknown)["VirtualService/backend"] == ACTIVE
    assert not unknown.errors
    assert [d.code for d in unknown.warnings] == ["IST0101"]


def test_references_that_go_away_leave_the_object_in_force() -> None:
    good = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(50, 50)})
    # The subsets go away: the VirtualService stays, with a warning per subset.
    no_rule = load({"registry.yaml": REGISTRY, "vs.yaml": split(50, 50)}, good)
    assert no_rule.mesh is not None
    assert weights(no_rule) == [50, 50]
    assert states(no_rule)["VirtualService/backend"] == ACTIVE
    assert [d.field_path for d in no_rule.warnings] == [
        "spec.http[0].route[0].destination.subset",
        "spec.http[0].route[1].destination.subset",
    ]


def test_deleting_an_object_removes_it() -> None:
    good = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(50, 50)})
    gone = load({"registry.yaml": REGISTRY, "rule.yaml": RULE}, good)
    assert gone.mesh is not None and gone.mesh.virtual_services == ()
    assert object_changes(good.in_force(), gone) == [
        ("VirtualService", "delete", "default/backend")
    ]


def test_a_directory_that_does_not_parse_has_no_mesh_and_says_where() -> None:
    broken = {"registry.yaml": REGISTRY, "vs.yaml": "spec:\n  hosts:\n  - a\n   http: []\n"}
    result = load(broken)
    assert result.parse_failed
    assert [d.format() for d in result.diagnostics] == [
        "vs.yaml:4:8: YAML syntax error: mapping values are not allowed in this context "
        "(check the indentation of this line)"
    ]
    # `sailplane validate` keeps going to report the rest too.
    thorough = load_texts(sorted(broken.items()), keep_going=True)
    assert thorough.parse_failed
    assert len(thorough.diagnostics) == 1  # the registry itself is fine


def test_object_changes_name_adds_updates_and_deletes() -> None:
    first = load({"registry.yaml": REGISTRY, "vs.yaml": split(100, 0)})
    second = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(0, 100)}, first)
    assert object_changes(first.in_force(), second) == [
        ("DestinationRule", "add", "default/backend"),
        ("VirtualService", "update", "default/backend"),  # in force before, without subsets
    ]
    third = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "vs.yaml": split(50, 50)}, second)
    assert object_changes(second.in_force(), third) == [
        ("VirtualService", "update", "default/backend")
    ]
    # Comments and formatting are not changes.
    same = load(
        {"registry.yaml": "# a comment\n" + REGISTRY, "rule.yaml": RULE, "vs.yaml": split(50, 50)},
        third,
    )
    assert object_changes(third.in_force(), same) == []


def test_an_object_with_one_bad_host_is_not_half_applied() -> None:
    entry = textwrap.dedent(
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: both}
        spec:
          hosts: [api.example.com, backend.default.svc.cluster.local]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: DNS
        """
    )
    result = load({"registry.yaml": REGISTRY, "se.yaml": entry})
    assert result.mesh is not None
    assert "api.example.com" not in result.mesh.services_by_host
    assert states(result)["ServiceEntry/both"] == REJECTED


def test_kinds_not_translated_yet_are_ignored_not_rejected() -> None:
    patch = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\n"
    result = load({"registry.yaml": REGISTRY, "patch.yaml": patch})
    assert states(result)["EnvoyFilter/a"] == IGNORED
    assert all(d.severity is not Severity.ERROR for d in result.diagnostics)
