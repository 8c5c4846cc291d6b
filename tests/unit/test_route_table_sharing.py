"""Sidecars whose route tables would differ only in their outbound listener
port (several sidecars on one host, each with its own port, as in the peer
benchmark) share one table: its name does not follow the port
(names.OUTBOUND_ROUTE_NAME), so it is built, encoded and split for VHDS once
per configuration, every listener names it, and it follows every change
(server/routetables.py, Controller._route_table)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.server import routetables
from sailplane.server.controller import Controller
from sailplane.translate import proxy_from_node
from sailplane.xds import LISTENER, ROUTE, SnapshotCache, TypeResources
from sailplane.xds.client import _rds_names as rds_names

SERVICES = "\n---\n".join(
    f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: s{i}, namespace: app}}
spec:
  hosts: [s{i}.app.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.{i + 1}}}]
"""
    for i in range(3)
)

WORKLOADS = "\n---\n".join(
    f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: w{i}, namespace: app}}
spec: {{address: 127.1.0.{i + 1}}}
"""
    for i in range(3)
)


def _virtual_service(weight: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: s0, namespace: app}}
spec:
  hosts: [s0.app.example]
  http:
  - route:
    - {{destination: {{host: s0.app.example}}, weight: {weight}}}
    - {{destination: {{host: s1.app.example}}, weight: {100 - weight}}}
"""


def _mesh(weight: int, previous: Any = None) -> Any:
    result = load_texts(
        [
            ("services.yaml", SERVICES),
            ("workloads.yaml", WORKLOADS),
            ("vs.yaml", _virtual_service(weight)),
        ],
        previous=previous,
    )
    assert result.mesh is not None, result.diagnostics
    return result


PORTS = (15001, 10001, 10002)


def _tables(controller: Controller, mesh: MeshConfig) -> dict[int, TypeResources]:
    """Each sidecar's routes, by its outbound listener port."""
    return {
        port: controller.admit(
            proxy_from_node(f"w{i}.app", {"sailplane.outbound_address": f"127.0.0.1:{port}"}, mesh)
        ).get(ROUTE)
        for i, port in enumerate(PORTS)
    }


def _outbound(routes: TypeResources) -> route_pb2.RouteConfiguration:
    body = discovery_pb2.DiscoveryResponse.FromString(routes.body())
    configs = [route_pb2.RouteConfiguration.FromString(r.value) for r in body.resources]
    (config,) = [c for c in configs if c.virtual_hosts and c.virtual_hosts[0].domains != ["*"]]
    return config


def _rds_names(controller: Controller, mesh: MeshConfig, port: int) -> set[str]:
    """The route configs the sidecar on ``port``'s listeners name."""
    i = PORTS.index(port)
    proxy = proxy_from_node(f"w{i}.app", {"sailplane.outbound_address": f"127.0.0.1:{port}"}, mesh)
    listeners = controller.admit(proxy).get(LISTENER).messages.values()
    return {name for listener in listeners for name in rds_names(listener.SerializeToString())}


def _weights(config: route_pb2.RouteConfiguration) -> list[int]:
    (vhost,) = [v for v in config.virtual_hosts if v.name.startswith("s0.")]
    return [c.weight.value for c in vhost.routes[0].route.weighted_clusters.clusters]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the virtual hosts translated, by name."""
    names: list[str] = []
    build = vars(routetables)["build_outbound_virtual_host"]

    def counting(mesh: MeshConfig, planned: Any, *args: Any) -> Any:
        names.append(planned.name)
        return build(mesh, planned, *args)

    monkeypatch.setattr(routetables, "build_outbound_virtual_host", counting)
    return names


def test_sidecars_on_other_ports_share_one_table_built_once(built: list[str]) -> None:
    loaded = _mesh(90)
    controller = Controller(SnapshotCache())
    controller.apply(loaded.mesh)
    tables = _tables(controller, loaded.mesh)
    shared = tables[15001]
    assert all(routes is shared for routes in tables.values())  # one object
    assert _outbound(shared).name == "15001"
    # Every sidecar's outbound listener names that table, whatever its port.
    for port in PORTS:
        assert "15001" in _rds_names(controller, loaded.mesh, port), port
    assert len(built) == 3  # one per service, not one per service per port
    assert _weights(_outbound(shared)) == [90, 10]


def test_the_shared_table_follows_a_change_and_only_the_change_is_translated(
    built: list[str],
) -> None:
    loaded = _mesh(90)
    controller = Controller(SnapshotCache())
    controller.apply(loaded.mesh)
    before = _tables(controller, loaded.mesh)[15001]
    built.clear()
    changed = _mesh(30, previous=loaded.in_force())
    controller.apply(changed.mesh)
    tables = _tables(controller, changed.mesh)
    assert tables[15001] is not before
    assert all(routes is tables[15001] for routes in tables.values())
    assert _weights(_outbound(tables[15001])) == [30, 70]
    assert [name.split(".")[0] for name in built] == ["s0"]  # once, for every port
