"""Field support as data (issue #16): every Istio field is declared, and a
field sailplane knows but does not implement is reported, never dropped.

``tests/data/istio-api-fields/istio-api-fields.txt`` lists the fields of
Istio's API, generated from istio/api (see generate.py there);
``sailplane/config/fields/`` declares what sailplane does with each.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from sailplane.config.envelope import MESH_KINDS, OTHER_KINDS
from sailplane.config.fieldcheck import readme_field_list, split_path
from sailplane.config.fields import DECLARED, Support
from sailplane.config.loader import LoadResult, load_dir
from sailplane.model.source import Severity
from tests.support.registry import BACKEND_V1

ROOT = Path(__file__).resolve().parents[2]
API_FIELDS = ROOT / "tests" / "data" / "istio-api-fields" / "istio-api-fields.txt"
# Declared, but not Istio's: Kubernetes' core v1 Service.
NOT_ISTIO = {"Service"}


def istio_api() -> dict[str, set[str]]:
    fields: dict[str, set[str]] = defaultdict(set)
    for line in API_FIELDS.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, path = line.split()
            fields[kind].add(path)
    return dict(fields)


API = istio_api()


def parent(path: str) -> str | None:
    return path.rpartition(".")[0] or None


def ancestors(path: str) -> list[str]:
    out = []
    while (path := parent(path) or "") != "":
        out.append(path)
    return out


def test_the_api_data_names_its_source() -> None:
    header = [line for line in API_FIELDS.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "customresourcedefinitions.gen.yaml" in text
    assert re.search(r"\b[0-9a-f]{40}\b", text), "the istio/api commit"


def test_every_kind_sailplane_reads_is_declared_and_every_api_kind_accounted_for() -> None:
    # ConfigMap and Secret have no spec: their data is read by key.
    read = {
        k for group, kinds in MESH_KINDS.items() for k in kinds if k not in ("ConfigMap", "Secret")
    }
    assert read == set(DECLARED)
    for kind in API:
        # A kind sailplane does not read at all is reported as such, whole.
        assert kind in DECLARED or any(kind in kinds for kinds in OTHER_KINDS.values()), kind
    assert set(DECLARED) - NOT_ISTIO <= set(API)


@pytest.mark.parametrize("kind", sorted(set(DECLARED) - NOT_ISTIO))
def test_every_istio_field_is_declared_implemented_or_not(kind: str) -> None:
    """Each field of Istio's API is declared, or lies under a declared field
    that is not implemented (the whole subtree is then reported as one)."""
    declared = DECLARED[kind].fields
    missing = [
        path
        for path in sorted(API[kind])
        if path not in declared
        and not any(
            a in declared and declared[a].support is not Support.IMPLEMENTED
            for a in ancestors(path)
        )
    ]
    assert not missing, f"{kind}: fields of Istio's API in no declaration: {missing}"


@pytest.mark.parametrize("kind", sorted(set(DECLARED) - NOT_ISTIO))
def test_every_declared_field_is_in_istios_api(kind: str) -> None:
    typos = sorted(set(DECLARED[kind].fields) - API[kind])
    assert not typos, f"{kind}: declared fields Istio does not define: {typos}"


@pytest.mark.parametrize("kind", sorted(DECLARED))
def test_declarations_hang_from_implemented_fields(kind: str) -> None:
    """A field is declared under an implemented parent only: under one that
    is not, the declaration would never be consulted."""
    declared = DECLARED[kind].fields
    for path, field in declared.items():
        split_path(path)  # well formed
        up = parent(path)
        if up is not None:
            assert up in declared, f"{kind}: {path} has no declared parent"
            assert declared[up].support is Support.IMPLEMENTED, f"{kind}: {path} under {up}"
        if field.harmless:
            assert field.support is Support.UNSUPPORTED, f"{kind}: {path}"


def test_the_readme_lists_what_the_declarations_say() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- fields: .*?-->\n(.*?)<!-- end of fields -->", readme, re.S)
    assert match, "README.md: the generated list of fields not implemented"
    assert match.group(1) == readme_field_list(), (
        "README.md's list of fields not implemented is out of date; paste in:\n"
        + readme_field_list()
    )


# -- behaviour ---------------------------------------------------------------

REGISTRY = BACKEND_V1

MESH = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend}
    retries:
      attempts: 3
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: true
    mirror: {host: backend}
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], unmatchedPreflights: IGNORE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmupDurationSecs: 10s
"""


def load(tmp_path: Path, mesh: str) -> LoadResult:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "mesh.yaml").write_text(textwrap.dedent(mesh))
    return load_dir(tmp_path)


def reported(result: LoadResult) -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity is not Severity.INFO]


def test_known_fields_not_implemented_are_warned_about_and_the_objects_apply(
    tmp_path: Path,
) -> None:
    result = load(tmp_path, MESH)
    assert reported(result) == [
        "mesh.yaml:14:85: warning: VirtualService default/backend: "
        "spec.http[0].corsPolicy.unmatchedPreflights: "
        "unmatchedPreflights is not supported yet; ignored",
        "mesh.yaml:24:27: warning: DestinationRule default/backend: "
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs: "
        "warmupDurationSecs is not supported yet; ignored",
    ]
    assert result.mesh is not None
    (vs,) = result.mesh.virtual_services
    assert vs.http[0].retries is not None and vs.http[0].retries.attempts == 3
    # Implemented: read into the model, no warning.
    assert vs.http[0].retries.remote_localities and vs.http[0].retries.ignore_previous_hosts
    assert vs.http[0].mirror is not None and vs.http[0].mirror_percentage is None
    (rule,) = result.mesh.destination_rules
    assert rule.traffic_policy is not None and rule.traffic_policy.load_balancer is not None
    assert rule.traffic_policy.load_balancer.simple == "ROUND_ROBIN"


def test_a_value_sailplane_behaves_as_anyway_draws_nothing(tmp_path: Path) -> None:
    """useClientProtocol: false is Istio's default and what sailplane does
    (no warning); true is not honoured."""
    result = load(
        tmp_path,
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          trafficPolicy:
            connectionPool: {http: {useClientProtocol: false}}
          subsets:
          - name: v1
            labels: {version: v1}
            trafficPolicy:
              connectionPool: {http: {useClientProtocol: true}}
        """,
    )
    assert reported(result) == [
        "mesh.yaml:12:50: warning: DestinationRule default/backend: "
        "spec.subsets[0].trafficPolicy.connectionPool.http.useClientProtocol: "
        "useClientProtocol is not supported yet; ignored"
    ]


def test_a_whole_subtree_not_implemented_is_one_warning(tmp_path: Path) -> None:
    """Per subset and per port too; what is under the field is not checked."""
    result = load(
        tmp_path,
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          subsets:
          - name: v1
            labels: {version: v1}
            trafficPolicy:
              portLevelSettings:
              - port: {number: 5000}
                connectionPool:
                  tcp: {maxConnections: 10, tcpKeepalive: {time: 7200s, whatever: 1}}
        """,
    )
    assert reported(result) == [
        "mesh.yaml:13:51: warning: DestinationRule default/backend: "
        "spec.subsets[0].trafficPolicy.portLevelSettings[0].connectionPool.tcp.tcpKeepalive: "
        "tcpKeepalive is not supported yet; ignored"
    ]
    assert result.mesh is not None and len(result.mesh.destination_rules) == 1


def test_unknown_fields_are_still_typos_wherever_they_are(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - route: [{destination: {host: backend}}]
            retries: {atempts: 2}
        """,
    )
    assert reported(result) == [
        "mesh.yaml:8:24: warning: IST0106: VirtualService default/backend: "
        "spec.http[0].retries.atempts: unknown field 'atempts' (did you mean 'attempts'?)"
    ]


def test_a_security_field_not_implemented_is_an_error_and_the_policy_fails_closed(
    tmp_path: Path,
) -> None:
    """Ignoring serviceAccounts would widen an ALLOW (or narrow a DENY)."""
    result = load(
        tmp_path,
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: allow-frontend}
        spec:
          selector: {matchLabels: {app: backend}}
          rules:
          - from:
            - source: {serviceAccounts: [frontend]}
        """,
    )
    assert reported(result) == [
        "mesh.yaml:3:18: warning: AuthorizationPolicy default/allow-frontend: metadata.name: "
        "this policy has errors: it denies every request to the workloads it selects until "
        "it is fixed",
        "mesh.yaml:8:33: IST0106: AuthorizationPolicy default/allow-frontend: "
        "spec.rules[0].from[0].source.serviceAccounts: serviceAccounts is not supported yet",
    ]
    assert result.mesh is not None
    (policy,) = result.mesh.authorization_policies
    assert policy.fail_closed
