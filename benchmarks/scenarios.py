"""The scenarios: each is a function of :class:`Params` returning sections of
metrics (``{section: {metric: value}}``), so a new scenario is one function
plus one line in :data:`SCENARIOS`."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.fanout import run_fanout
from benchmarks.meshgen import MeshSpec, generate_texts, proxy_ids
from sailplane.config.loader import load_texts
from sailplane.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import Snapshot, SnapshotCache
from sailplane.xds.types import SHORT_NAMES

Sections = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Params:
    services: int = 1000
    ports: int = 2
    workloads: int = 1  # per service
    proxies: int = 1000
    repeat: int = 5
    change: str = "endpoint"
    subsets: int = 0  # DestinationRule subsets (and a weighted VirtualService) per service
    delta: bool = False  # simulated proxies speak delta xDS
    changes: int = 1  # pushed changes, for p50/p99 of change -> all SYNCED

    @property
    def spec(self) -> MeshSpec:
        return MeshSpec(self.services, self.ports, self.workloads, subsets=self.subsets)


def _ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def _translate_once(
    texts: list[tuple[str, str]], node_id: str
) -> tuple[dict[str, float], Snapshot]:
    """One timed run; returns seconds per stage and the proxy's snapshot."""
    controller = Controller(SnapshotCache())  # its CA's key is made here, not timed
    gc.collect()
    t0 = time.perf_counter()
    mesh = load_texts(texts).mesh
    assert mesh is not None
    t1 = time.perf_counter()
    controller.apply(mesh)
    t2 = time.perf_counter()
    proxy = proxy_from_node(node_id, {}, mesh)
    snapshot = controller.snapshot_for(proxy)
    t3 = time.perf_counter()
    controller.snapshot_for(proxy)  # shared work is done: the marginal proxy
    t4 = time.perf_counter()
    stages = {
        "ms": t3 - t0,
        "load_ms": t1 - t0,
        "apply_ms": t2 - t1,
        "snapshot_ms": t3 - t2,
        "next_proxy_snapshot_ms": t4 - t3,
    }
    return stages, snapshot


def translate(params: Params) -> Sections:
    """YAML text -> MeshConfig -> Controller.apply -> one proxy's snapshot, for
    ``params.services`` x ``params.ports``; the median of ``params.repeat`` runs."""
    texts = generate_texts(params.spec)
    node_id = proxy_ids(params.spec, 1)[0]
    runs = [_translate_once(texts, node_id) for _ in range(max(1, params.repeat))]
    snapshot = runs[-1][1]
    types = [snapshot.resources[t] for t in sorted(snapshot.resources)]
    metrics: dict[str, Any] = {
        name: _ms([stages[name] for stages, _ in runs]) for name in runs[0][0]
    }
    metrics.update(
        {
            "repeat": len(runs),
            "consistent": not snapshot.consistent(),
            "resources": {SHORT_NAMES[t.type_url]: len(t.chunks) for t in types},
            "bytes": {SHORT_NAMES[t.type_url]: len(t.body()) for t in types},
        }
    )
    return {"translate": metrics}


def fanout(params: Params) -> Sections:
    """Cold start and one pushed change over real ADS streams; the server's RSS."""
    gc.collect()
    return asyncio.run(
        run_fanout(
            params.spec,
            params.proxies,
            params.change,
            delta=params.delta,
            changes=params.changes,
        )
    )


SCENARIOS: dict[str, Callable[[Params], Sections]] = {
    "translate": translate,
    "fanout": fanout,
}


def run(params: Params, names: list[str] | None = None) -> Sections:
    sections: Sections = {}
    for name in names or list(SCENARIOS):
        sections.update(SCENARIOS[name](params))
    return sections
