"""The VHDS split of a route table (sailplane/xds/vhds.py): faithful to the
inline table, named as Envoy requires, and computed once per shared table,
not once per proxy."""

from __future__ import annotations

import itertools

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


SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s%(i)d, namespace: app}
spec:
  hosts: [s%(i)d.app.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.%(i)d}]
"""
CLIENT = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: app}
spec: {address: 127.1.0.1}
"""
ROUTE_EDIT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: s1, namespace: app}
spec:
  hosts: [s1.app.example]
  http:
  - route:
    - {destination: {host: s1.app.example}, weight: %(w)d}
    - {destination: {host: s2.app.example}, weight: %(rest)d}
"""


def _generations() -> list[TypeResources]:
    """The client's shared route table through edits: a weight, another
    weight, a service added, a service removed."""
    services = [SERVICE % {"i": i} for i in range(1, 6)]
    steps = [
        [*services, ROUTE_EDIT % {"w": 90, "rest": 10}],
        [*services, ROUTE_EDIT % {"w": 50, "rest": 50}],
        [*services, SERVICE % {"i": 9}, ROUTE_EDIT % {"w": 50, "rest": 50}],
        [*services[1:], SERVICE % {"i": 9}, ROUTE_EDIT % {"w": 50, "rest": 50}],
    ]
    controller = Controller(SnapshotCache())
    tables, previous = [], None
    for docs in steps:
        result = load_texts([("mesh.yaml", "---\n".join([CLIENT, *docs]))], previous=previous)
        assert result.mesh is not None, result.diagnostics
        controller.apply(result.mesh)
        routes = controller.admit(proxy_from_node("client.app", {}, result.mesh)).get(ROUTE)
        tables.append(routes.parts()[-1])  # the shared table
        vhds_view(tables[-1])  # split as a delta stream would, generation by generation
        previous = result.in_force()
    return tables


def _whole_table(table: TypeResources) -> TypeResources:
    """The same table, as a new object that is split from scratch."""
    ((name, chunk),) = table.chunks.items()
    return TypeResources(ROUTE, table.version, {name: chunk}, vhds=True)


def _whole(table: TypeResources) -> TypeResources:
    return vhds_view(_whole_table(table)).vhosts


def test_each_generation_splits_from_the_last_as_a_whole_split_would() -> None:
    tables = _generations()
    assert len({t.version for t in tables}) == len(tables)
    for before, after in itertools.pairwise(tables):
        old, new = vhds_view(before).vhosts, vhds_view(after).vhosts
        whole = _whole(after)
        assert dict(new.chunks) == dict(whole.chunks) and new.version == whole.version
        assert vhds_view(after).routes.chunks == vhds_view(_whole_table(after)).routes.chunks
        # What did not change is the previous split's very bytes and versions.
        same = [n for n in new.chunks if old.chunks.get(n) == new.chunks[n]]
        assert same and all(new.chunks[n] is old.chunks[n] for n in same)
        assert all(new.resource_version(n) == old.resource_version(n) for n in same)
    weight_edit = vhds_view(tables[1]).vhosts
    first = vhds_view(tables[0]).vhosts
    moved = {n for n in weight_edit.chunks if weight_edit.chunks[n] is not first.chunks.get(n)}
    assert moved == {"15001/s1.app.example:80"}
