"""Snapshots check their own consistency, and under the test suite (see
tests/conftest.py) the Controller checks every snapshot it builds."""

from __future__ import annotations

import dataclasses
import os

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2

from sailplane.config.loader import load_texts
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import (
    CLUSTER,
    ENDPOINT,
    SECRET,
    Snapshot,
    SnapshotCache,
    TypeResources,
    merge_types,
)

REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-1}
spec: {address: 10.0.0.1, labels: {app: backend}, serviceAccount: backend}
"""


def eds_cluster(name: str, service_name: str = "") -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            service_name=service_name,
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource()
            ),
        ),
    )


def test_a_dangling_reference_is_reported_unless_its_type_is_withheld() -> None:
    clusters = TypeResources.of([eds_cluster("a"), eds_cluster("b")])
    endpoints = TypeResources.from_values(ENDPOINT, [("a", b"")])
    snapshot = Snapshot({CLUSTER: clusters, ENDPOINT: endpoints})
    assert snapshot.consistent() == ["cluster refers to missing ClusterLoadAssignment 'b'"]
    withheld = Snapshot(snapshot.resources, withheld={ENDPOINT: "not on this port"})
    assert withheld.consistent() == []


def test_a_proxys_own_resources_replace_shared_ones_in_what_it_refers_to() -> None:
    shared = TypeResources.of([eds_cluster("a"), eds_cluster("b")])
    own = TypeResources.of([eds_cluster("b", service_name="b-own"), eds_cluster("c")])
    assert merge_types(shared, own).references.eds == {"a", "b-own", "c"}
    assert merge_types(shared, TypeResources.of([eds_cluster("c")])).references.eds == {
        "a",
        "b",
        "c",
    }


def test_the_controller_checks_every_snapshot_it_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ.get("SAILPLANE_CHECK_SNAPSHOTS") == "1"  # tests/conftest.py
    mesh = load_texts([("registry.yaml", REGISTRY)]).mesh
    assert mesh is not None
    controller = Controller(SnapshotCache())
    controller.apply(mesh)
    proxy = proxy_from_node("backend-1.default", {}, mesh)
    proven = dataclasses.replace(proxy, proven_identity=mesh.spiffe_id("default", "backend"))
    assert controller.snapshot_for(proven).get(SECRET).chunks  # consistent: served
    # Plaintext: the secrets its listeners refer to are withheld, by design.
    assert not controller.snapshot_for(proxy).get(SECRET).chunks

    empty = TypeResources.build(SECRET, [])
    monkeypatch.setattr(controller, "secrets_for", lambda proxy: empty)
    with pytest.raises(AssertionError, match=r"inconsistent snapshot: .*missing Secret"):
        controller.snapshot_for(proven)
