"""Localities from the registry, localityLbSetting's checks, and per-proxy
endpoints: which locality a proxy is (the registry's, never a bootstrap
that says otherwise), and that proxies of one locality share one set of
ClusterLoadAssignments."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from sailplane.config.loader import LoadResult, load_dir
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Locality
from sailplane.model.source import Severity
from sailplane.server.admission import admitted_proxy, claims_digest
from sailplane.server.generation import build_generation, next_generation
from sailplane.translate import proxy_from_node
from sailplane.translate.bootstrap import build_bootstrap
from sailplane.translate.impact import impact_of

CLUSTER = "outbound|5000||hello.sample.svc.cluster.local"

REGISTRY = """\
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: sample}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-local, namespace: sample}
spec: {address: 10.0.0.1, labels: {app: hello}, locality: region1/zone1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-zone-labels, namespace: sample}
spec:
  address: 10.0.0.2
  labels:
    app: hello
    topology.kubernetes.io/region: region1
    topology.kubernetes.io/zone: zone2
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-remote, namespace: sample}
spec: {address: 10.0.0.3, labels: {app: hello, istio-locality: region2.zone1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-a, namespace: sample}
spec: {address: 10.0.0.8, labels: {app: client}, locality: region1/zone1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-b, namespace: sample}
spec: {address: 10.0.0.9, labels: {app: client}, locality: region1/zone1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-nowhere, namespace: sample}
spec: {address: 10.0.0.10, labels: {app: other}}
"""

FAILOVER = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello, namespace: sample}
spec:
  host: hello
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover: [{from: region1, to: region2}]
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}
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


def priorities(assignment: endpoint_pb2.ClusterLoadAssignment) -> dict[str, int]:
    return {
        g.lb_endpoints[0].endpoint.address.socket_address.address: g.priority
        for g in assignment.endpoints
        if g.lb_endpoints
    }


def test_workload_localities_as_istio_reads_them(tmp_path: Path) -> None:
    mesh = mesh_of(tmp_path, "")
    found = {w.name: w.locality for w in mesh.workloads}
    assert found["hello-local"] == Locality("region1", "zone1")
    assert found["hello-zone-labels"] == Locality("region1", "zone2")
    assert found["hello-remote"] == Locality("region2", "zone1")  # "." read as "/"
    assert found["client-nowhere"] == Locality()


def test_failover_priorities_follow_the_proxy_locality(tmp_path: Path) -> None:
    mesh = mesh_of(tmp_path, FAILOVER)
    generation = build_generation(mesh)
    assert generation.located == {"hello.sample.svc.cluster.local"}
    here = generation.endpoints_for(proxy_from_node("client-a.sample", {}, mesh))
    assert priorities(here.messages[CLUSTER]) == {"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2}
    # A proxy with no locality: every endpoint is elsewhere, one priority.
    nowhere = generation.endpoints_for(proxy_from_node("client-nowhere.sample", {}, mesh))
    assert nowhere is generation.endpoints
    assert set(priorities(nowhere.messages[CLUSTER]).values()) == {0}


def test_proxies_of_one_locality_share_their_assignments(tmp_path: Path) -> None:
    mesh = mesh_of(tmp_path, FAILOVER)
    generation = build_generation(mesh)
    a = generation.endpoints_for(proxy_from_node("client-a.sample", {}, mesh))
    b = generation.endpoints_for(proxy_from_node("client-b.sample", {}, mesh))
    assert a is b
    # The next configuration (a workload moved) keeps what it did not touch.
    moved = mesh_of(tmp_path, FAILOVER.replace("baseEjectionTime: 1m", "baseEjectionTime: 2m"))
    following = next_generation(generation, moved, impact_of(mesh, moved))
    again = following.endpoints_for(proxy_from_node("client-a.sample", {}, moved))
    assert priorities(again.messages[CLUSTER]) == priorities(a.messages[CLUSTER])


def test_without_outlier_detection_there_is_no_failover(tmp_path: Path) -> None:
    text = FAILOVER.replace(
        "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n", ""
    )
    result = load(tmp_path, text)
    (warning,) = [d.format() for d in result.diagnostics if d.severity is Severity.WARNING]
    assert "outlier detection policy must be provided for failover" in warning
    assert result.mesh is not None
    generation = build_generation(result.mesh)
    assert not generation.located
    view = generation.endpoints_for(proxy_from_node("client-a.sample", {}, result.mesh))
    assert set(priorities(view.messages[CLUSTER]).values()) == {0}


def test_the_registry_locality_wins_over_what_a_bootstrap_claims(tmp_path: Path) -> None:
    """Istio's setTopologyLabels: the registry first; node.locality only for
    a workload the registry places nowhere."""
    mesh = mesh_of(tmp_path, FAILOVER)
    generation = build_generation(mesh)
    lying = base_pb2.Node(id="client-a.sample")
    lying.locality.region = "region2"
    proxy = admitted_proxy(lying, None, mesh)
    assert proxy.locality == Locality("region1", "zone1")
    assignment = generation.endpoints_for(proxy).messages[CLUSTER]
    assert priorities(assignment)["10.0.0.1"] == 0
    # Not in the registry: the bootstrap's word is all there is.
    placed = base_pb2.Node(id="client-nowhere.sample")
    placed.locality.region = "region2"
    proxy = admitted_proxy(placed, None, mesh)
    assert priorities(generation.endpoints_for(proxy).messages[CLUSTER])["10.0.0.3"] == 0
    # Two streams claiming different localities never share a snapshot key.
    plain = admitted_proxy(base_pb2.Node(id="client-nowhere.sample"), None, mesh)
    assert claims_digest(plain) != claims_digest(proxy)


def test_the_bootstrap_carries_the_workload_locality(tmp_path: Path) -> None:
    mesh = mesh_of(tmp_path, "")
    bootstrap = build_bootstrap(mesh.workloads_by_id["client-a.sample"], ("127.0.0.1", 15010))
    assert (bootstrap.node.locality.region, bootstrap.node.locality.zone) == ("region1", "zone1")
    nowhere = build_bootstrap(mesh.workloads_by_id["client-nowhere.sample"], ("127.0.0.1", 1))
    assert not nowhere.node.HasField("locality")


def _rule(setting: str, outlier: bool = True) -> str:
    text = textwrap.dedent(
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello, namespace: sample}
        spec:
          host: hello
          trafficPolicy:
            loadBalancer:
              localityLbSetting: SETTING
        """
    ).replace("SETTING", setting)
    return text + ("    outlierDetection: {consecutive5xxErrors: 1}\n" if outlier else "")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "{distribute: [{from: region1, to: {region1: 80, region2: 20}}], "
            "failover: [{from: region1, to: region2}]}",
            "can not simultaneously specify 'distribute' and 'failover'",
        ),
        (
            "{distribute: [{from: region1, to: {region1: 80, region2: 10}}]}",
            "total locality weight 90 != 100",
        ),
        (
            "{distribute: [{from: region1, to: {region1: 0, region2: 100}}]}",
            "locality weight must be in range [1, 100]",
        ),
        (
            "{failover: [{from: region1, to: region1}]}",
            "locality lb failover settings must specify different regions",
        ),
        ("{failover: [{from: region1/zone1, to: region2}]}", "only specify region"),
        (
            "{failover: [{from: region1, to: region2}], "
            "failoverPriority: [topology.kubernetes.io/zone]}",
            "can not simultaneously set 'failover' and topology label",
        ),
        (
            "{distribute: [{from: 'region1/*/zone', to: {region1: 100}}]}",
            "wildcard '*' number can not exceed 1 and must be in the end",
        ),
        (
            "{distribute: [{from: region1, to: {region1: 100}}, "
            "{from: region1/zone1, to: {region1: 100}}]}",
            "overlap with previous specified ones",
        ),
    ],
)
def test_invalid_settings_are_rejected_with_istio_messages(
    tmp_path: Path, setting: str, message: str
) -> None:
    result = load(tmp_path, _rule(setting))
    errors = [d.format() for d in result.diagnostics if d.severity is Severity.ERROR]
    assert any(message in e for e in errors), errors
    assert all("spec.trafficPolicy.loadBalancer.localityLbSetting" in e for e in errors)
    assert result.mesh is not None and not result.mesh.destination_rules


def test_the_mesh_config_can_turn_locality_balancing_off(tmp_path: Path) -> None:
    off = """\
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: istio, namespace: istio-system}
    data:
      mesh: |
        localityLbSetting: {enabled: false}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: hello, namespace: sample}
    spec:
      host: hello
      trafficPolicy:
        outlierDetection: {consecutive5xxErrors: 1}
    """
    mesh = mesh_of(tmp_path, off)
    assert mesh.settings.locality_lb is None
    assert not build_generation(mesh).located
    # The mesh default (enabled) makes outlier detection alone fail over by proximity.
    on = mesh_of(tmp_path, off.replace("enabled: false", "enabled: true"))
    generation = build_generation(on)
    here = generation.endpoints_for(proxy_from_node("client-a.sample", {}, on))
    assert priorities(here.messages[CLUSTER]) == {"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 2}
