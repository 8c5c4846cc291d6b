"""An endpoint-only change (a WorkloadEntry's address or labels) re-translates
only endpoints and pushes EDS only, over both protocols; the result equals a
full translation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, SnapshotCache
from sailplane.xds.client import AdsClient
from sailplane.xds.delta_client import DeltaAdsClient
from sailplane.xds.types import VIRTUAL_HOST
from sailplane.xds.vhds import delta_version
from tests.protocol.conftest import eventually

# alpha and gamma have sidecars; beta's address changes; the rest are filler,
# so that "proportional to the change" is measurable.
SERVICES = ("alpha", "beta", "gamma", *(f"filler-{i}" for i in range(7)))


def mesh_yaml(beta_address: str = "127.1.0.2", gamma_version: str = "v1") -> MeshConfig:
    docs = []
    for index, name in enumerate(SERVICES):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 5000}}]\n"
        )
        address = beta_address if name == "beta" else f"127.1.0.{index + 1}"
        version = gamma_version if name == "gamma" else "v1"
        docs.append(
            f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
            f"metadata: {{name: {name}-1}}\n"
            f"spec: {{address: {address}, serviceAccount: {name}, "
            f"labels: {{app: {name}, version: {version}}}}}\n"
        )
    result = load_texts([("mesh.yaml", "---\n".join(docs))])
    assert result.mesh is not None, [d.format() for d in result.diagnostics]
    return result.mesh


class Pushes(Controller):
    def __init__(self, cache: SnapshotCache) -> None:
        super().__init__(cache)
        self.pushed: list[str] = []
        self.sizes: list[int] = []

    def on_hold(self, node_id: str, outcome: str) -> None:
        pass

    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None:
        self.pushed.append(type_url)
        self.sizes.append(size)

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        pass


NODES = ["alpha-1.default", "gamma-1.default"]


def test_incremental_equals_full_translation() -> None:
    controller = Controller(SnapshotCache())
    controller.apply(mesh_yaml())
    for node in NODES:  # as on_connect does
        controller.admit(_proxy(controller, node))
    before = {n: controller.cache.get(n) for n in NODES}
    changed = mesh_yaml(beta_address="127.1.0.9", gamma_version="v2")
    controller.apply(changed)
    # gamma's own workload changed (its labels), so its own proxy is rebuilt too.
    assert controller.last_apply == "services"
    assert controller.last_impact.proxies == {"beta-1.default", "gamma-1.default"}

    full = Controller(SnapshotCache())
    full.apply(changed)
    for node in NODES:
        got, want = controller.cache.get(node), _snapshot(full, node)
        assert got is not None
        for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            assert got.version(type_url) == want.version(type_url), (node, type_url)
    # alpha's own workload did not change: its snapshot differs in EDS only, and
    # shares every other type's object with the previous one.
    old, new = before["alpha-1.default"], controller.cache.get("alpha-1.default")
    assert old is not None and new is not None
    assert [t for t in old.resources if old.resources[t] is not new.resources[t]] == [ENDPOINT]


def _proxy(controller: Controller, node: str):  # type: ignore[no-untyped-def]
    from sailplane.translate import proxy_from_node

    assert controller.mesh is not None
    return proxy_from_node(node, {}, controller.mesh)


def _snapshot(controller: Controller, node: str):  # type: ignore[no-untyped-def]
    return controller.snapshot_for(_proxy(controller, node))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_endpoint_change_pushes_eds_only(
    serve: Callable[[AdsServer], Awaitable[str]], delta: bool
) -> None:
    cache = SnapshotCache()
    controller = Pushes(cache)
    controller.apply(mesh_yaml())
    ads = AdsServer(cache, admission=controller, observer=controller)
    target = await serve(ads)
    stop = asyncio.Event()
    clients = [(DeltaAdsClient if delta else AdsClient)(target, node) for node in NODES]
    tasks = []
    for client in clients:
        client.open()
        tasks.append(asyncio.create_task(client.follow(stop)))

    def version(node: str, type_url: str) -> str:
        snapshot = cache.get(node)
        assert snapshot is not None
        # Delta streams are served routes over VHDS (sailplane/xds/vhds.py).
        return delta_version(snapshot, type_url) if delta else snapshot.version(type_url)

    def synced() -> bool:
        streams = ads.status.to_json()
        kinds = [("clusters", CLUSTER), ("endpoints", ENDPOINT), ("routes", ROUTE)]
        if delta:
            kinds.append(("vhosts", VIRTUAL_HOST))
        return len(streams) == len(NODES) and all(
            s["types"].get(short, {}).get("state") == "SYNCED"
            and s["types"][short]["acked"] == version(s["proxy"], url)
            for s in streams
            for short, url in kinds
        )

    try:
        await eventually(synced, what="SYNCED before the change")
        controller.pushed.clear()
        controller.sizes.clear()
        assert controller.apply(mesh_yaml(beta_address="127.1.0.9")) == len(NODES)
        assert controller.last_apply == "services"
        await eventually(synced, what="SYNCED after the endpoint change")
        await asyncio.sleep(0.2)
        assert controller.pushed and set(controller.pushed) == {ENDPOINT}
        endpoints = cache.get(NODES[0]).get(ENDPOINT)  # type: ignore[union-attr]
        # Bytes proportional to the change, over both protocols: beta's
        # ClusterLoadAssignment only (state of the world may send just the
        # resources that changed for types other than clusters and listeners) ...
        assert max(controller.sizes) < len(endpoints.body()) / 4
        # ... and every client still holds every ClusterLoadAssignment, current.
        for client in clients:
            held = client.views[ENDPOINT].resources
            assert held.keys() == endpoints.chunks.keys()
            assert all(endpoints.chunks[n].endswith(v) for n, v in held.items())
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
