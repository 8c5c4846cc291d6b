"""Self-check of a configuration: translate it for every workload and ask
each snapshot whether it is consistent (every EDS name in CDS, every RDS
name in LDS, every referenced secret present). An inconsistency is a bug of
sailplane's, not of the configuration; ``sailplane validate`` reports it so
that it is found before a proxy is left waiting for a resource that never
comes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import SnapshotCache


def inconsistent_snapshots(mesh: MeshConfig) -> Iterator[tuple[str, list[str]]]:
    """``(proxy id, problems)`` for each workload whose snapshot, as served
    on the mTLS port (secrets included), is not consistent."""
    controller = Controller(SnapshotCache(), trust_domain=mesh.trust_domain)
    controller.apply(mesh)
    for workload in mesh.workloads:
        proxy = proxy_from_node(workload.id, {}, mesh)
        proven = mesh.spiffe_id(proxy.namespace, workload.service_account)
        snapshot = controller.snapshot_for(dataclasses.replace(proxy, proven_identity=proven))
        problems = snapshot.consistent()
        if problems:
            yield workload.id, problems
