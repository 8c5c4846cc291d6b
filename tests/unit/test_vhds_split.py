"""The VHDS split of a route table (sailplane/xds/vhds.py): faithful to the
inline table, named as Envoy requires, and computed once per shared table,
not once per proxy."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from sailplane.config.loader import load_texts
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import ROUTE, SnapshotCache, TypeResources
from sailplane.xds.types import VIRTUAL_HOST
from sailplane.xds.vhds import VHDS_ENTRY, namespace_of, split_route_config, vhds_view, vhost_key


def _table(*vhosts: rc.VirtualHost, vhds: bool = True) -> TypeResources:
    config = route_pb2.RouteConfiguration(
        name="15001", virtual_hosts=vhosts, validate_clusters={"value": False}
    )
    return TypeResources.from_values(
        ROUTE, [(config.name, config.SerializeToString(deterministic=True))], vhds=vhds
    )


def test_split_is_the_inline_table_over_vhds() -> None:
    vhosts = [
        rc.VirtualHost(name="a.default.svc.cluster.local:80", domains=["a", "a:80"]),
        rc.VirtualHost(name="odd/name%", domains=["odd"]),
        rc.VirtualHost(name="allow_any", domains=["*"]),
    ]
    view = vhds_view(_table(*vhosts))
    (shell,) = view.routes.messages.values()
    assert isinstance(shell, route_pb2.RouteConfiguration)
    assert not shell.virtual_hosts and shell.validate_clusters.value is False
    assert shell.vhds.config_source.HasField("ads")
    assert shell.vhds.config_source.resource_api_version == 2  # V3
    assert VHDS_ENTRY in view.routes.chunks["15001"]
    # Names: "{route config}/{key}", VirtualHost.name the same, no "/" in key.
    got = dict(view.vhosts.messages)
    assert sorted(got) == sorted(
        ["15001/a.default.svc.cluster.local:80", "15001/odd%2Fname%25", "15001/allow_any"]
    )
    for name, vhost in got.items():
        assert isinstance(vhost, rc.VirtualHost)
        assert vhost.name == name and namespace_of(name) == "15001"
    by_key = {vhost_key(v.name): v for v in vhosts}
    for name, vhost in got.items():
        original = by_key[name.split("/", 1)[1]]
        renamed = rc.VirtualHost()
        renamed.CopyFrom(original)
        renamed.name = name
        assert vhost == renamed
    assert view.namespaces == {"15001"}
    assert view.vhosts.type_url == VIRTUAL_HOST


@pytest.mark.parametrize(
    "vhosts",
    [
        (),  # nothing to serve over VHDS: a namespace with no resource would warm 15 s
        (rc.VirtualHost(name="x", domains=["a"]), rc.VirtualHost(name="x", domains=["b"])),
    ],
    ids=["no-virtual-hosts", "duplicate-names"],
)
def test_tables_that_stay_inline(vhosts: tuple[rc.VirtualHost, ...]) -> None:
    table = _table(*vhosts)
    view = vhds_view(table)
    assert view.routes is table and not view.vhosts.chunks and not view.namespaces


def test_only_tables_built_for_vhds_are_split() -> None:
    table = _table(rc.VirtualHost(name="a", domains=["a"]), vhds=False)
    assert vhds_view(table).routes is table
    value = route_pb2.RouteConfiguration(name="r", vhds=route_pb2.Vhds()).SerializeToString()
    assert split_route_config("r", value) is None  # VHDS already


MESH = """\
apiVersion: v1
kind: Service
metadata: {name: %(name)s}
spec:
  selector: {app: %(name)s}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %(name)s-1}
spec: {address: 127.1.0.%(index)d, serviceAccount: %(name)s, labels: {app: %(name)s}}
"""


def test_split_once_per_shared_table_and_shared_by_proxies() -> None:
    names = ["alpha", "beta", "gamma"]
    text = "---\n".join(MESH % {"name": n, "index": i + 1} for i, n in enumerate(names))
    result = load_texts([("mesh.yaml", text)])
    assert result.mesh is not None
    controller = Controller(SnapshotCache())
    controller.apply(result.mesh)
    snapshots = [
        controller.admit(proxy_from_node(f"{n}-1.default", {}, result.mesh)) for n in names
    ]
    routes = [s.get(ROUTE) for s in snapshots]
    views = [vhds_view(r) for r in routes]
    shared = {id(r.parts()[-1]) for r in routes}
    assert len(shared) == 1  # one shared sidecar table ...
    assert len({id(v.vhosts) for v in views}) == 1  # ... split once, its vhosts shared
    assert all(vhds_view(r) is v for r, v in zip(routes, views, strict=True))  # remembered
    # Each proxy's own inbound route configs stay inline, beside the shell.
    for view, route in zip(views, routes, strict=True):
        inline = set(route.chunks) - view.namespaces
        assert inline and all(view.routes.chunks[n] == route.chunks[n] for n in inline)
    assert any(n.endswith("/alpha.default.svc.cluster.local:5000") for n in views[0].vhosts.chunks)
