"""A change saved to disk -> every connected proxy's snapshot in the cache,
without the network: what ``serve`` does before it can push.

The real :class:`~sailplane.server.reload.Reloader` over a real directory
(read, incremental parse, validation, the controller's apply), with
``proxies`` sidecars admitted as the mTLS port admits them; the heap is
frozen afterwards, as ``serve``'s heap keeper does after a burst. Each change
is saved and then undone, ``repeat`` times at least twice; the median:

* ``<change>_ms``: one VirtualService weight, one WorkloadEntry added;
* ``<change>_snapshots_moved``: how many proxies' snapshots it changed.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.fanout import CHANGES, changed_spec
from benchmarks.meshgen import MeshSpec, generate_texts, proxy_ids, write_texts
from sailplane.server.controller import Controller
from sailplane.server.ops.metrics import Metrics
from sailplane.server.reload import Reloader
from sailplane.translate import proxy_from_node
from sailplane.xds import SnapshotCache

MAX_FILE_SIZE = 1 << 30  # the generated files are large on purpose


def run_reload(spec: MeshSpec, proxies: int, repeat: int = 3) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="sailplane-reload-") as tmp:
        root = Path(tmp)
        write_texts(root, generate_texts(spec))
        cache = SnapshotCache()
        controller = Controller(cache)
        reloader = Reloader(root, MAX_FILE_SIZE, controller, cache, Metrics(), lambda: None)
        assert reloader.reload(), "the generated mesh does not load"
        mesh = controller.mesh
        assert mesh is not None
        for node_id in proxy_ids(spec, proxies):
            proxy = proxy_from_node(node_id, {}, mesh)
            identity = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
            controller.admit(dataclasses.replace(proxy, proven_identity=identity))
        metrics: dict[str, Any] = {"proxies": proxies}
        gc.collect()
        gc.freeze()
        try:
            for change in CHANGES:
                if change == "weight" and not spec.subsets:
                    continue
                specs = [changed_spec(spec, change), spec]
                times, moved = [], []
                for i in range(max(2, repeat)):  # saved, then undone
                    write_texts(root, generate_texts(specs[i % 2]))
                    start = time.perf_counter()
                    assert reloader.reload(), f"the {change} change did not apply"
                    times.append((time.perf_counter() - start) * 1000)
                    moved.append(len(controller.last_changed))
                metrics[f"{change}_ms"] = statistics.median(times)
                metrics[f"{change}_snapshots_moved"] = max(moved)
        finally:
            gc.unfreeze()
    return {"reload": metrics}
