"""The ConnectAuthorityCluster (egress.connect_authority_cluster) is in CDS
exactly while a ``tls`` rule tunnels to a wildcard host (connect.py), and
follows edits on the incremental path: no route ever names it while it is
missing (Envoy would answer 503), and no sidecar carries it unused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.translate.clusters import build_outbound_clusters
from sailplane.translate.egress import CONNECT_AUTHORITY_CLUSTER, tunnels_to_authority
from sailplane.xds import CLUSTER, ROUTE, SnapshotCache
from tests.unit.test_sidecar_tls_route_table import mesh_of, to, vs

SNI = {"port": 443, "sniHosts": ["*.wikipedia.org"]}
WILDCARD = vs([{"match": [SNI], "route": [to("*.wikipedia.org")]}], hosts=["*.wikipedia.org"])
NAMED = vs(
    [
        {
            "match": [{"port": 443, "sniHosts": ["secure.example.test"]}],
            "route": [to("secure.example.test")],
        }
    ]
)

CASES = {
    "no VirtualService": ("", False),
    "a tls rule to a named host": (NAMED, False),
    "a tls rule to a wildcard host": (WILDCARD, True),
    "the wildcard has weight 0 beside a weighted one": (
        vs(
            [
                {
                    "match": [SNI],
                    "route": [
                        to("*.wikipedia.org", weight=0),
                        to("secure.example.test", weight=100),
                    ],
                }
            ],
            hosts=["*.wikipedia.org"],
        ),
        False,
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_present_only_while_a_rule_tunnels_to_it(tmp_path: Path, case: str) -> None:
    text, expected = CASES[case]
    mesh = mesh_of(tmp_path, text)
    assert tunnels_to_authority(mesh) is expected
    names = {c.name for c in build_outbound_clusters(mesh)}
    assert (CONNECT_AUTHORITY_CLUSTER in names) is expected
    assert {"PassthroughCluster", "BlackHoleCluster"} <= names


def _routed_to_authority(routes: bytes) -> bool:
    return CONNECT_AUTHORITY_CLUSTER.encode() in routes


def test_incremental_edits_add_and_remove_it(tmp_path: Path) -> None:
    """A VirtualService edit (a routes-only change, not a full one) adds the
    cluster with the route that needs it and takes it out with the last
    such route; each snapshot equals a from-scratch translation's."""
    meshes: list[MeshConfig] = []
    for index, text in enumerate(("", WILDCARD, NAMED, WILDCARD)):
        root = tmp_path / str(index)
        root.mkdir()
        meshes.append(mesh_of(root, text))
    controller = Controller(SnapshotCache())
    controller.apply(meshes[0])
    proxy = proxy_from_node("client.default", {}, meshes[0])
    controller.admit(proxy)
    for step, mesh in enumerate(meshes[1:], 1):
        controller.apply(mesh)
        assert controller.last_impact.full is False, step
        snapshot = controller.cache.get(proxy.id)
        assert snapshot is not None
        clusters = snapshot.get(CLUSTER)
        routed = _routed_to_authority(snapshot.get(ROUTE).joined)
        assert routed is tunnels_to_authority(mesh), step
        assert (CONNECT_AUTHORITY_CLUSTER in clusters.chunks) is routed, step
        scratch = Controller(SnapshotCache())
        scratch.apply(mesh)
        expected = scratch.snapshot_for(proxy).get(CLUSTER)
        assert dict(clusters.chunks) == dict(expected.chunks), step
        assert clusters.version == expected.version, step
