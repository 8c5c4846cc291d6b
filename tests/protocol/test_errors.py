"""Refused streams get a clean gRPC error; everyone else is still served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from envoy.config.core.v3 import base_pb2

from sailplane.errors import UnknownProxy
from sailplane.xds import CLUSTER, AdmitAll, AdsServer, Peer, SnapshotCache
from sailplane.xds.client import AdsClient
from tests.protocol.conftest import EDS_NAMES, eventually, names, reference_snapshot, streams_of

KNOWN = "frontend-v1.default"


class MeshHooks(AdmitAll):
    """Admit only the nodes the mesh knows, as the controller does."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.disconnected: list[str] = []

    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        if node.id not in self.known:
            raise UnknownProxy(f"no WorkloadEntry for node {node.id!r}")
        return str(node.id)

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        self.disconnected.append(node_id)


async def test_unknown_node_is_refused_and_others_are_served(
    cache: SnapshotCache,
    serve: Callable[[AdsServer], Awaitable[str]],
    connect: Callable[..., AdsClient],
) -> None:
    cache.set(KNOWN, reference_snapshot())
    hooks = MeshHooks({KNOWN})
    ads = AdsServer(cache, admission=hooks)
    target = await serve(ads)

    known = connect(KNOWN, to=target)
    known.request(CLUSTER)
    assert names(await known.recv()) == EDS_NAMES

    stranger = connect("ghost.default", to=target)
    stranger.request(CLUSTER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stranger.recv()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ghost.default" in (refused.value.details() or "")
    assert not streams_of(ads, "ghost.default")
    assert hooks.disconnected == []  # a refused node never had a stream

    # The server goes on: the open stream still works, and new ones are admitted.
    later = connect(KNOWN, to=target)
    later.request(CLUSTER)
    assert names(await later.recv()) == EDS_NAMES
    assert cache.set(KNOWN, reference_snapshot(connect_timeout=3.0))
    assert (await known.recv()).type_url == CLUSTER
    assert (await later.recv()).type_url == CLUSTER
    await eventually(lambda: len(streams_of(ads, KNOWN)) == 2)


async def test_first_request_without_node_id_is_invalid(
    cache: SnapshotCache, ads: AdsServer, connect: Callable[..., AdsClient]
) -> None:
    cache.set(KNOWN, reference_snapshot())
    anonymous = connect("")
    anonymous.request(CLUSTER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await anonymous.recv()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ads.status.to_json() == []

    client = connect(KNOWN)
    client.request(CLUSTER)
    assert names(await client.recv()) == EDS_NAMES
