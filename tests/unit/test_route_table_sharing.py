"""Sidecars whose route tables differ only in their outbound listener port
(several sidecars on one host, each with its own port, as in the peer
benchmark) share the virtual hosts: built once per configuration, joined
under each port's route config name, and each table still follows every
change (server/routetables.py, Controller._route_table)."""

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
from sailplane.xds import ROUTE, SnapshotCache

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


def _route_configs(
    controller: Controller, mesh: MeshConfig
) -> dict[str, route_pb2.RouteConfiguration]:
    out = {}
    for i, port in enumerate((15001, 10001, 10002)):
        proxy = proxy_from_node(
            f"w{i}.app", {"sailplane.outbound_address": f"127.0.0.1:{port}"}, mesh
        )
        routes = controller.admit(proxy).get(ROUTE)
        body = discovery_pb2.DiscoveryResponse.FromString(routes.body())
        for resource in body.resources:
            config = route_pb2.RouteConfiguration.FromString(resource.value)
            if config.virtual_hosts and config.virtual_hosts[0].domains != ["*"]:
                out[str(port)] = config
    return out


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


def test_tables_of_other_ports_share_the_virtual_hosts_built_once(built: list[str]) -> None:
    loaded = _mesh(90)
    controller = Controller(SnapshotCache())
    controller.apply(loaded.mesh)
    configs = _route_configs(controller, loaded.mesh)
    assert sorted(configs) == ["10001", "10002", "15001"]
    assert {name: config.name for name, config in configs.items()} == {
        name: name for name in configs
    }
    first = configs["15001"].virtual_hosts
    assert all(config.virtual_hosts == first for config in configs.values())
    assert len(built) == 3  # one per service, not one per service per port
    assert all(_weights(config) == [90, 10] for config in configs.values())


def test_every_port_follows_a_change_and_only_the_change_is_translated(built: list[str]) -> None:
    loaded = _mesh(90)
    controller = Controller(SnapshotCache())
    controller.apply(loaded.mesh)
    _route_configs(controller, loaded.mesh)
    built.clear()
    changed = _mesh(30, previous=loaded.in_force())
    controller.apply(changed.mesh)
    configs = _route_configs(controller, changed.mesh)
    assert all(_weights(config) == [30, 70] for config in configs.values())
    assert [name.split(".")[0] for name in built] == ["s0"]  # once, for every port
