"""Translation, without the network: how long the control plane takes to turn
a mesh into Envoy resources, from scratch and after one change.

* ``load_ms``: YAML text -> MeshConfig (parse, validate, cross-checks);
* ``full_ms``: MeshConfig -> every shared cluster and endpoint, encoded, plus
  one sidecar's whole snapshot (its route table, listeners, secrets): what a
  full push translates;
* ``<change>_ms``: the same after one change (a VirtualService weight, one
  WorkloadEntry added), with one connected sidecar, so that its route table
  is brought up to date too; and what was re-translated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fanout import CHANGES, changed_spec
from benchmarks.meshgen import MeshSpec, generate_texts, proxy_ids
from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.server import routetables
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import SnapshotCache, TypeResources
from sailplane.xds.types import SHORT_NAMES


@dataclass
class Work:
    """Resources encoded and virtual hosts built, by type."""

    encoded: dict[str, int] = field(default_factory=dict)
    virtual_hosts: int = 0


_VHOST_BUILDER = "build_outbound_virtual_host"


@contextlib.contextmanager
def count_work() -> Iterator[Work]:
    """Every resource sailplane serves is encoded by TypeResources.from_values
    and only there; every sidecar virtual host is built by one function."""
    work = Work()
    from_values = TypeResources.__dict__["from_values"]
    # Patched where routetables looks it up (its module globals).
    namespace = vars(routetables)
    build_vhost = namespace[_VHOST_BUILDER]

    def counting(
        cls: type[TypeResources], type_url: str, values: Any, vhds: bool = False
    ) -> TypeResources:
        items = list(values)
        short = SHORT_NAMES.get(type_url, type_url)
        if items:
            work.encoded[short] = work.encoded.get(short, 0) + len(items)
        result: TypeResources = from_values.__func__(cls, type_url, items, vhds)
        return result

    def counting_vhost(*args: Any, **kwargs: Any) -> Any:
        work.virtual_hosts += 1
        return build_vhost(*args, **kwargs)

    TypeResources.from_values = classmethod(counting)  # type: ignore[assignment]
    namespace[_VHOST_BUILDER] = counting_vhost
    try:
        yield work
    finally:
        TypeResources.from_values = from_values  # type: ignore[method-assign]
        namespace[_VHOST_BUILDER] = build_vhost


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = action()
    return (time.perf_counter() - start) * 1000, result


def _load(texts: list[tuple[str, str]]) -> MeshConfig:
    mesh = load_texts(texts).mesh
    assert mesh is not None, "the generated mesh does not load"
    return mesh


def run_translation(spec: MeshSpec, repeat: int = 3) -> dict[str, dict[str, Any]]:
    node_id = proxy_ids(spec, 1)[0]
    texts = generate_texts(spec)
    loads, fulls = [], []
    snapshot = None
    for _ in range(max(1, repeat)):
        load_ms, mesh = _timed(lambda: _load(texts))
        loads.append(load_ms)
        controller = Controller(SnapshotCache())  # its CA key is made here, untimed

        def full(controller: Controller = controller, mesh: MeshConfig = mesh) -> Any:
            controller.apply(mesh)
            proxy = proxy_from_node(node_id, {}, mesh)
            # As on the mTLS port: the proxy proved its identity, gets its secrets.
            identity = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
            return controller.admit(dataclasses.replace(proxy, proven_identity=identity))

        full_ms, snapshot = _timed(full)
        fulls.append(full_ms)
    assert snapshot is not None
    metrics: dict[str, Any] = {
        "load_ms": statistics.median(loads),
        "full_ms": statistics.median(fulls),
        "consistent": not snapshot.consistent(),
        "resources": {SHORT_NAMES[t]: len(r.chunks) for t, r in sorted(snapshot.resources.items())},
        "bytes": {SHORT_NAMES[t]: len(r.body()) for t, r in sorted(snapshot.resources.items())},
    }
    for change in CHANGES:
        if change == "weight" and not spec.subsets:
            continue
        meshes = [_load(generate_texts(changed_spec(spec, change))), mesh]
        times, works, kinds = [], [], set()
        for i in range(max(2, repeat)):  # back and forth
            target = meshes[i % 2]
            with count_work() as work:
                ms, _ = _timed(lambda: controller.apply(target))  # noqa: B023 (called at once)
            times.append(ms)
            works.append(work)
            kinds.add(controller.last_apply)
        controller.apply(mesh)  # as it was, for the next kind of change
        metrics[f"{change}_ms"] = statistics.median(times)
        metrics[f"{change}_translation"] = "/".join(sorted(kinds))
        metrics[f"{change}_encoded"] = dict(sorted(works[0].encoded.items()))
        metrics[f"{change}_virtual_hosts_built"] = works[0].virtual_hosts
    return {"translate": metrics}
