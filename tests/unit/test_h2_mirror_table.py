"""Table tests of ``connectionPool.http.h2UpgradePolicy`` (Istio's
shouldH2Upgrade, cluster_traffic_policy.go) on outbound clusters and of the
mirror percentage (route.go MirrorPercent / MirrorPercentByPolicy), from
YAML to the Envoy fields they set."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from sailplane.config.loader import LoadResult, load_dir
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Severity
from sailplane.translate import proxy_from_node
from sailplane.translate.build import build_routes
from sailplane.translate.clusters import build_outbound_clusters

REGISTRY = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80}
  - {name: tcp-db, port: 5432}
  - {port: 9000}
  - {name: grpc, port: 7070}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-1}
spec: {address: 10.0.0.1, labels: {app: web, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client}
spec: {address: 10.0.0.9, labels: {app: client}}
"""


def load(tmp_path: Path, text: str) -> LoadResult:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "mesh.yaml").write_text(textwrap.dedent(text))
    return load_dir(tmp_path)


def mesh_of(tmp_path: Path, text: str) -> MeshConfig:
    result = load(tmp_path, text)
    errors = [d.format() for d in result.diagnostics if d.severity is Severity.ERROR]
    assert result.mesh is not None and not errors, errors
    return result.mesh


def h2_ports(mesh: MeshConfig) -> list[int]:
    """The ports of web whose cluster speaks HTTP/2 upstream."""
    out = []
    for cluster in build_outbound_clusters(mesh):
        if not cluster.name.endswith("web.default.svc.cluster.local"):
            continue
        options: dict[str, Any] = json_format.MessageToDict(cluster).get(
            "typedExtensionProtocolOptions", {}
        )
        explicit = [o.get("explicitHttpConfig", {}) for o in options.values()]
        if any("http2ProtocolOptions" in e for e in explicit):
            out.append(int(cluster.name.split("|")[1]))
    return sorted(out)


def rule(http: dict[str, Any] | None, port_level: dict[str, Any] | None = None) -> str:
    policy: dict[str, Any] = {}
    if http is not None:
        policy["connectionPool"] = {"http": http}
    if port_level is not None:
        policy["portLevelSettings"] = [
            {"port": {"number": 80}, "connectionPool": {"http": port_level}}
        ]
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "web"},
            "spec": {"host": "web", "trafficPolicy": policy},
        }
    )


MESH_UPGRADE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    h2UpgradePolicy: UPGRADE
"""

H2_ROWS = [
    # (id, DestinationRule http settings, port-level http settings, mesh UPGRADE, h2 ports)
    ("default-only-grpc", None, None, False, [7070]),
    (
        "rule-upgrade-every-port",
        {"h2UpgradePolicy": "UPGRADE"},
        None,
        False,
        [80, 5432, 7070, 9000],
    ),
    ("rule-default-is-mesh-default", {"h2UpgradePolicy": "DEFAULT"}, None, False, [7070]),
    ("mesh-upgrade-http-ports-only", None, None, True, [80, 7070]),
    ("rule-do-not-upgrade-beats-mesh", {"h2UpgradePolicy": "DO_NOT_UPGRADE"}, None, True, [7070]),
    ("use-client-protocol-never-upgrades", {"useClientProtocol": True}, None, True, [7070]),
    ("port-level-upgrade", None, {"h2UpgradePolicy": "UPGRADE"}, False, [80, 7070]),
]


@pytest.mark.parametrize(
    ("http", "port_level", "mesh_upgrade", "expected"),
    [r[1:] for r in H2_ROWS],
    ids=[r[0] for r in H2_ROWS],
)
def test_h2_upgrade_policy(
    tmp_path: Path,
    http: dict[str, Any] | None,
    port_level: dict[str, Any] | None,
    mesh_upgrade: bool,
    expected: list[int],
) -> None:
    text = rule(http, port_level) + ("\n---\n" + MESH_UPGRADE if mesh_upgrade else "")
    assert h2_ports(mesh_of(tmp_path, text)) == expected


def test_an_unknown_h2_upgrade_policy_is_an_error(tmp_path: Path) -> None:
    result = load(tmp_path, rule({"h2UpgradePolicy": "UPGRAD"}))
    (error,) = [d.format() for d in result.diagnostics if d.severity is Severity.ERROR]
    assert "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy" in error
    assert "did you mean 'UPGRADE'" in error


def virtual_service(http: dict[str, Any]) -> str:
    route = {"route": [{"destination": {"host": "web", "port": {"number": 80}}}], **http}
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"hosts": ["web"], "http": [route]},
        }
    )


MIRROR = {"host": "web", "port": {"number": 9000}}
MIRROR_CLUSTER = "outbound|9000||web.default.svc.cluster.local"
MIRROR_ROWS = [
    # (id, route fields, [(cluster, parts per million)])
    ("mirror-default-all", {"mirror": MIRROR}, [(MIRROR_CLUSTER, 1_000_000)]),
    ("mirror-percent-50", {"mirror": MIRROR, "mirrorPercent": 50}, [(MIRROR_CLUSTER, 500_000)]),
    (
        "mirror-percentage-wins",
        {"mirror": MIRROR, "mirrorPercent": 50, "mirrorPercentage": {"value": 12.5}},
        [(MIRROR_CLUSTER, 125_000)],
    ),
    ("mirror-percent-0-none", {"mirror": MIRROR, "mirrorPercent": 0}, []),
    ("mirror-percentage-0-none", {"mirror": MIRROR, "mirrorPercentage": {"value": 0}}, []),
    (
        "mirrors-each-its-own",
        {
            "mirrors": [
                {"destination": MIRROR, "percentage": {"value": 25}},
                {"destination": {"host": "web", "port": {"number": 5432}}},
                {"destination": MIRROR, "percentage": {"value": 0}},
            ]
        },
        [(MIRROR_CLUSTER, 250_000), ("outbound|5432||web.default.svc.cluster.local", 1_000_000)],
    ),
]


@pytest.mark.parametrize(
    ("http", "expected"), [r[1:] for r in MIRROR_ROWS], ids=[r[0] for r in MIRROR_ROWS]
)
def test_mirror_percentage(
    tmp_path: Path, http: dict[str, Any], expected: list[tuple[str, int]]
) -> None:
    mesh = mesh_of(tmp_path, virtual_service(http))
    proxy = proxy_from_node("client.default", {}, mesh)
    hosts = [v for r in build_routes(mesh, proxy) for v in r.virtual_hosts]
    (host,) = [v for v in hosts if v.name == "web.default.svc.cluster.local:80"]
    policies = host.routes[0].route.request_mirror_policies
    got = [(p.cluster, p.runtime_fraction.default_value.numerator) for p in policies]
    assert got == expected
    assert all(p.runtime_fraction.default_value.denominator == 2 for p in policies)  # MILLION


def test_mirror_percent_is_deprecated_and_bounded(tmp_path: Path) -> None:
    result = load(tmp_path, virtual_service({"mirror": MIRROR, "mirrorPercent": 150}))
    found = [(d.severity, d.message) for d in result.diagnostics if "mirrorPercent" in d.format()]
    assert (
        Severity.WARNING,
        'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead',
    ) in found
    assert (Severity.ERROR, "mirrorPercent must be 0-100 (it has 150)") in found


def test_mirror_and_mirrors_together_are_rejected(tmp_path: Path) -> None:
    both = {"mirror": MIRROR, "mirrors": [{"destination": MIRROR}]}
    result = load(tmp_path, virtual_service(both))
    errors = [d.message for d in result.diagnostics if d.severity is Severity.ERROR]
    assert "HTTP route cannot contain both mirror and mirrors" in errors
    assert result.mesh is not None and not result.mesh.virtual_services


def test_a_mirrors_destination_is_checked_like_a_route(tmp_path: Path) -> None:
    result = load(tmp_path, virtual_service({"mirrors": [{"destination": {"host": "nowhere"}}]}))
    assert any("spec.http[0].mirrors[0].destination" in d.format() for d in result.diagnostics), [
        d.format() for d in result.diagnostics
    ]
