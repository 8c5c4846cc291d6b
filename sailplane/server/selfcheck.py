"""Self-check of a configuration: translate it for every workload and ask
each snapshot whether it is consistent (every EDS name in CDS, every RDS
name in LDS, every referenced secret present). An inconsistency is a bug of
sailplane's, not of the configuration; ``sailplane validate`` reports it so
that it is found before a proxy is left waiting for a resource that never
comes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from sailplane.ca import IdentityStore
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.server.controller import Controller
from sailplane.server.credentials import consistency_problems
from sailplane.translate import proxy_from_node
from sailplane.translate.proxy import bootstrap_metadata
from sailplane.xds import Snapshot, SnapshotCache


def proxy_snapshots(
    mesh: MeshConfig, identities: IdentityStore | None = None
) -> Iterator[tuple[Workload, Snapshot]]:
    """Each workload's snapshot, as served on the mTLS port (secrets included);
    ``identities``: the certificates to use (shared, they make the snapshots
    of many configurations comparable), by default a fresh in-memory CA's."""
    controller = Controller(SnapshotCache(), identities, trust_domain=mesh.trust_domain)
    controller.apply(mesh)
    for workload in mesh.workloads:
        proxy = proxy_from_node(workload.id, bootstrap_metadata(workload), mesh)
        proven = mesh.spiffe_id(proxy.namespace, workload.service_account)
        yield workload, controller.snapshot_for(dataclasses.replace(proxy, proven_identity=proven))


def inconsistent_snapshots(
    mesh: MeshConfig, snapshots: Iterable[tuple[Workload, Snapshot]] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """``(proxy id, problems)`` for each workload whose snapshot, as served
    on the mTLS port (secrets included), is not consistent (``snapshots``:
    already built by :func:`proxy_snapshots`)."""
    for workload, snapshot in proxy_snapshots(mesh) if snapshots is None else snapshots:
        problems = consistency_problems(snapshot)
        if problems:
            yield workload.id, problems
