"""Several DestinationRules for one host, and rules with a workloadSelector.

Istio's semantics (pilot/pkg/model/destination_rule.go mergeDestinationRule,
push_context.go sortConfigBySelectorAndCreationTime, sidecar.go
SidecarScope.DestinationRule), with file order for creation time; the golden
case destination-rule-merge shows the clusters each proxy gets.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from sailplane.config.loader import load_texts
from sailplane.model.destinationrules import consolidate
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import (
    DestinationRule,
    LoadBalancer,
    LoadBalancerSimple,
    Subset,
    TrafficPolicy,
)
from sailplane.model.source import Position, Source
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import CLUSTER, ENDPOINT, SnapshotCache

HOST = "reviews.shop.svc.cluster.local"


def rule(
    name: str,
    line: int,
    subsets: dict[str, str] | None = None,
    lb: LoadBalancerSimple = "",
    selector: dict[str, str] | None = None,
    namespace: str = "shop",
) -> DestinationRule:
    return DestinationRule(
        name=name,
        namespace=namespace,
        source=Source("rules.yaml", Position(line, 1)),
        host=HOST,
        subsets=tuple(Subset(n, {"version": v}) for n, v in (subsets or {}).items()),
        traffic_policy=TrafficPolicy(load_balancer=LoadBalancer(lb)) if lb else None,
        workload_selector=selector or {},
    )


def summary(merged: DestinationRule | None) -> tuple[str, str, dict[str, str]]:
    assert merged is not None
    policy = merged.traffic_policy
    lb = policy.load_balancer.simple if policy and policy.load_balancer else ""
    return merged.name, lb, {s.name: s.labels["version"] for s in merged.subsets}


CASES = {
    "subsets-add-first-policy-wins": (
        [rule("a", 1, {"v1": "1"}, "RANDOM"), rule("b", 9, {"v2": "2"}, "LEAST_REQUEST")],
        ("a", "RANDOM", {"v1": "1", "v2": "2"}),
    ),
    "file-order-not-name-order": (
        [rule("b", 9, {"v2": "2"}, "LEAST_REQUEST"), rule("a", 20, {"v1": "1"}, "RANDOM")],
        ("b", "LEAST_REQUEST", {"v2": "2", "v1": "1"}),
    ),
    "first-policy-from-a-later-rule-when-the-first-has-none": (
        [rule("a", 1, {"v1": "1"}), rule("b", 9, {}, "RANDOM")],
        ("a", "RANDOM", {"v1": "1"}),
    ),
    "a-duplicate-subset-keeps-the-first": (
        [rule("a", 1, {"v1": "1"}), rule("b", 9, {"v1": "9", "v2": "2"})],
        ("a", "", {"v1": "1", "v2": "2"}),
    ),
    "other-namespace-is-not-merged": (
        [rule("a", 1, {"v1": "1"}), rule("b", 9, {"v2": "2"}, namespace="zoo")],
        ("a", "", {"v1": "1"}),
    ),
    "a-selector-rule-is-kept-apart": (
        [rule("a", 1, {"v1": "1"}), rule("c", 5, {"v3": "3"}, selector={"track": "canary"})],
        ("a", "", {"v1": "1"}),
    ),
}


@pytest.mark.parametrize(("rules", "expected"), CASES.values(), ids=CASES.keys())
def test_rules_without_selector_merge(
    rules: list[DestinationRule], expected: tuple[str, str, dict[str, str]]
) -> None:
    shared, _ = consolidate(rules)
    assert summary(shared[HOST]) == expected


def test_a_selector_rule_takes_in_the_later_plain_rules_of_its_namespace() -> None:
    rules = [
        rule("plain", 1, {"v1": "1", "v2": "2"}, "RANDOM"),
        rule("canary", 5, {"v1": "3"}, selector={"track": "canary"}),
        rule("same-selector", 7, {"v4": "4"}, "LEAST_REQUEST", selector={"track": "canary"}),
        rule("other-selector", 8, {"v5": "5"}, selector={"track": "beta"}),
        rule("elsewhere", 9, {"v6": "6"}, namespace="zoo"),
    ]
    _, selected = consolidate(rules)
    canary, beta = selected[HOST]
    # Selector rules come first (Istio's sort), so the plain rule merges into
    # them: its v1 loses to the canary's own, its policy fills the gap.
    assert summary(canary) == (
        "canary",
        "LEAST_REQUEST",
        {"v1": "3", "v4": "4", "v2": "2"},
    )
    assert summary(beta) == ("other-selector", "RANDOM", {"v5": "5", "v1": "1", "v2": "2"})


def test_which_rule_a_proxy_uses() -> None:
    rules = (
        rule("plain", 1, {"v1": "1"}),
        rule("canary", 5, {"v3": "3"}, selector={"track": "canary"}),
    )
    mesh = MeshConfig(destination_rules=rules)
    pick = mesh.destination_rule_for_proxy
    assert summary(pick(HOST, "shop", {"app": "client", "track": "canary"}))[0] == "canary"
    assert summary(pick(HOST, "shop", {"app": "client"}))[0] == "plain"
    # The lie: the labels match, the namespace does not (Istio: only the
    # rule's own namespace's proxies).
    assert summary(pick(HOST, "zoo", {"track": "canary"}))[0] == "plain"
    assert pick("ratings.shop.svc.cluster.local", "shop", {"track": "canary"}) is None


MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v3, namespace: shop}
spec: {address: 10.1.0.3, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: shop}
spec: {address: 10.1.0.9, labels: {app: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: canary, namespace: shop}
spec: {address: 10.1.0.10, labels: {app: client, track: canary}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: canary, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {track: canary}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: MAX}}}
  subsets: [{name: v3, labels: {version: v3}}]
"""


def load_mesh(max_connections: int = 7) -> MeshConfig:
    result = load_texts([("mesh.yaml", MESH.replace("MAX", str(max_connections)))])
    assert not result.errors and result.mesh is not None
    return result.mesh


def test_a_selector_costs_only_the_proxies_it_selects() -> None:
    controller = Controller(SnapshotCache(), issue=False)
    mesh = load_mesh()
    controller.apply(mesh)
    client = controller.admit(proxy_from_node("client.shop", {}, mesh))
    canary = controller.admit(proxy_from_node("canary.shop", {}, mesh))
    shared = controller._generation.clusters  # type: ignore[union-attr]
    assert client.get(CLUSTER) is shared  # nothing of its own to add
    v3 = f"outbound|9080|v3|{HOST}"
    assert v3 not in client.get(CLUSTER).chunks  # the lie: no subset for the others
    cluster = canary.get(CLUSTER).messages[v3]
    assert cluster.circuit_breakers.thresholds[0].max_connections.value == 7
    eds_name = cluster.eds_cluster_config.service_name
    assert eds_name == f"{v3}|shop/canary"
    assignment = canary.get(ENDPOINT).messages[eds_name]
    addresses = [
        e.endpoint.address.socket_address.address for e in assignment.endpoints[0].lb_endpoints
    ]
    assert addresses == ["10.1.0.3"]
    assert canary.consistent() == [] and client.consistent() == []

    # Editing the rule reaches the selected proxy; the others' clusters stay.
    before_client = controller.cache.get("client.shop")
    controller.apply(load_mesh(max_connections=8))
    after = controller.cache.get("canary.shop")
    assert after is not None
    assert after.get(CLUSTER).messages[v3].circuit_breakers.thresholds[0].max_connections.value == 8
    after_client = controller.cache.get("client.shop")
    assert before_client is not None and after_client is not None
    assert after_client.get(CLUSTER).version == before_client.get(CLUSTER).version


def test_a_workload_selector_without_labels_is_a_warning() -> None:
    text = MESH.replace("{matchLabels: {track: canary}}", "{}").replace("MAX", "1")
    result = load_texts([("mesh.yaml", textwrap.dedent(text))])
    assert [d.message for d in result.warnings] == [
        "workload selector specified without labels; sailplane applies the rule as if it "
        "had no selector"
    ]
    assert result.mesh is not None
    (only,) = result.mesh.destination_rules
    assert dataclasses.asdict(only)["workload_selector"] == {}


def test_meshes_with_the_same_rule_objects_share_one_merge() -> None:
    """A load makes several meshes with the same rules (each check returns a
    replaced one) and hands unchanged rules on as the same objects: they are
    merged once. Other rule objects, even equal ones, are merged again."""
    plain = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: canary-more, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {track: canary}}
  subsets: [{name: v4, labels: {version: v4}}]
"""

    def load(max_connections: int) -> MeshConfig:
        text = MESH.replace("MAX", str(max_connections)) + plain
        result = load_texts([("mesh.yaml", text)])
        assert not result.errors and result.mesh is not None
        return result.mesh

    mesh = load(7)
    canary = {"track": "canary"}
    first = mesh.destination_rule_for_proxy(HOST, "shop", canary)
    assert first is not None and first not in mesh.destination_rules  # a merge of both
    assert [subset.name for subset in first.subsets] == ["v3", "v4"]
    replaced = dataclasses.replace(mesh, objects=())
    assert replaced.destination_rule_for_proxy(HOST, "shop", canary) is first
    edited = load(8)
    rule = edited.destination_rule_for_proxy(HOST, "shop", canary)
    assert rule is not None and rule is not first
    assert rule.traffic_policy != first.traffic_policy  # the edit, not the old merge
    again = load(7).destination_rule_for_proxy(HOST, "shop", canary)
    assert again == first and again is not first  # equal rules, new objects: merged anew
