"""Table tests of VirtualService ``tls`` rules at sidecars: each applicable
match becomes a CONNECT virtual host (translate/connect.py), domains
``SNI:PORT``, one connect_matcher route tunnelling to the destinations;
the incremental route table (server/routetables.py) holds the same bytes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from sailplane.config.loader import LoadResult, load_dir
from sailplane.model.mesh import MeshConfig
from sailplane.model.source import Severity
from sailplane.server.routetables import build_sidecar_route_table
from sailplane.translate import proxy_from_node
from sailplane.translate.build import build_routes

CORPUS = Path(__file__).parents[1] / "data" / "istio-corpus" / "docs-traffic"

REGISTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure}
spec:
  hosts: [secure.example.test, other.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.5}]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 8443, name: https-alt, protocol: HTTPS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wikipedia}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: plain}
spec:
  hosts: [plain.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9000, name: unnamed}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client}
spec: {address: 10.0.0.9, labels: {app: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: other}
spec: {address: 10.0.0.10, labels: {app: other}}
"""


def load(tmp_path: Path, text: str) -> LoadResult:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "mesh.yaml").write_text(textwrap.dedent(text))
    return load_dir(tmp_path)


def mesh_of(tmp_path: Path, text: str) -> MeshConfig:
    result = load(tmp_path, text)
    errors = [d.format() for d in result.diagnostics if d.severity is Severity.ERROR]
    assert result.mesh is not None and not errors, errors
    return result.mesh


def vs(tls: list[dict[str, Any]], **spec: Any) -> str:
    body = {"hosts": ["secure.example.test", "other.example.test"], "tls": tls, **spec}
    return yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "secure"},
            "spec": body,
        }
    )


def to(host: str, port: int | None = 443, weight: int | None = None) -> dict[str, Any]:
    dest: dict[str, Any] = {"destination": {"host": host}}
    if port is not None:
        dest["destination"]["port"] = {"number": port}
    if weight is not None:
        dest["weight"] = weight
    return dest


SECURE = "outbound|443||secure.example.test"
OTHER = "outbound|443||other.example.test"


def tunnels(mesh: MeshConfig, node: str = "client.default") -> list[tuple[tuple[str, ...], Any]]:
    """(domains, cluster or [(cluster, weight)]) of each CONNECT virtual host,
    checking each has the one connect_matcher route that upgrades."""
    proxy = proxy_from_node(node, {}, mesh)
    (config,) = build_routes(mesh, proxy)
    out = []
    for host in config.virtual_hosts:
        if not host.name.startswith("connect|"):
            continue
        (route,) = host.routes
        assert route.match.HasField("connect_matcher")
        (upgrade,) = route.route.upgrade_configs
        assert upgrade.upgrade_type == "CONNECT" and upgrade.HasField("connect_config")
        action = route.route
        target: Any = action.cluster or [
            (c.name, c.weight.value) for c in action.weighted_clusters.clusters
        ]
        out.append((tuple(host.domains), target))
    # the catch-all stays last; the incremental table is the same bytes
    assert config.virtual_hosts[-1].domains == ["*"]
    table = build_sidecar_route_table(mesh, proxy).resources.messages[config.name]
    assert table.SerializeToString(deterministic=True) == config.SerializeToString(
        deterministic=True
    )
    return out


SNI = {"port": 443, "sniHosts": ["secure.example.test"]}
CASES: dict[str, tuple[str, list[tuple[tuple[str, ...], Any]]]] = {
    "one sni, one destination": (
        vs([{"match": [SNI], "route": [to("secure.example.test")]}]),
        [(("secure.example.test:443",), SECURE)],
    ),
    "weighted 70/30": (
        vs(
            [
                {
                    "match": [SNI],
                    "route": [
                        to("secure.example.test", weight=70),
                        to("other.example.test", weight=30),
                    ],
                }
            ]
        ),
        [(("secure.example.test:443",), [(SECURE, 70), (OTHER, 30)])],
    ),
    "no port: every TLS/HTTPS port of the hosts": (
        vs(
            [
                {
                    "match": [{"sniHosts": ["secure.example.test"]}],
                    "route": [to("secure.example.test", port=None)],
                }
            ]
        ),
        [
            (("secure.example.test:443",), SECURE),
            (("secure.example.test:8443",), "outbound|8443||secure.example.test"),
        ],
    ),
    "bound to a gateway only: nothing at sidecars": (
        vs(
            [{"match": [{**SNI, "gateways": ["gw"]}], "route": [to("secure.example.test")]}],
            gateways=["gw", "mesh"],
        ),
        [],
    ),
    "match.gateways mesh on a gateway-bound VirtualService": (
        vs(
            [{"match": [{**SNI, "gateways": ["mesh"]}], "route": [to("secure.example.test")]}],
            gateways=["gw"],
        ),
        [(("secure.example.test:443",), SECURE)],
    ),
    "sourceLabels of another workload": (
        vs(
            [
                {
                    "match": [{**SNI, "sourceLabels": {"app": "other"}}],
                    "route": [to("secure.example.test")],
                }
            ]
        ),
        [],
    ),
    "sourceLabels of this workload": (
        vs(
            [
                {
                    "match": [{**SNI, "sourceLabels": {"app": "client"}}],
                    "route": [to("secure.example.test")],
                }
            ]
        ),
        [(("secure.example.test:443",), SECURE)],
    ),
    "a duplicate SNI is skipped, the first rule wins": (
        vs(
            [
                {"match": [SNI], "route": [to("secure.example.test")]},
                {
                    "match": [
                        {"port": 443, "sniHosts": ["secure.example.test", "other.example.test"]}
                    ],
                    "route": [to("other.example.test")],
                },
            ]
        ),
        [
            (("secure.example.test:443",), SECURE),
            (("other.example.test:443",), OTHER),
        ],
    ),
    "exported to its own namespace, seen from another": (
        vs([{"match": [SNI], "route": [to("secure.example.test")]}], exportTo=["other"]),
        [],
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_sidecar_tls_route(tmp_path: Path, case: str) -> None:
    text, expected = CASES[case]
    assert tunnels(mesh_of(tmp_path, text)) == expected


def test_wildcard_service_entry_goes_to_the_forward_proxy(tmp_path: Path) -> None:
    """The corpus's direct wildcard egress (36): resolution NONE, the CONNECT
    authority's own host, confined by the domain to *.wikipedia.org:443; and
    no warning that sidecars ignore the rule."""
    text = (CORPUS / "36-wildcard-egress-direct.yaml").read_text()
    result = load(tmp_path, text.replace("name: wikipedia\n", "name: wikipedia-vs\n", 1))
    assert not [d.format() for d in result.diagnostics if "tls" in d.format()]
    assert result.mesh is not None
    assert tunnels(result.mesh) == [(("*.wikipedia.org:443",), "ConnectAuthorityCluster")]


def test_domain_of_an_http_virtual_host_is_not_duplicated(tmp_path: Path) -> None:
    """A port of unknown protocol is routed as HTTP: its ``host:port`` domain
    is the HTTP virtual host's; Envoy would reject it twice."""
    text = yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "plain"},
            "spec": {
                "hosts": ["plain.example.test"],
                "tls": [
                    {
                        "match": [{"port": 9000, "sniHosts": ["plain.example.test"]}],
                        "route": [to("plain.example.test", 9000)],
                    }
                ],
            },
        }
    )
    assert tunnels(mesh_of(tmp_path, text)) == []


def test_no_connect_route_for_other_namespace_clients_without_export(tmp_path: Path) -> None:
    mesh = mesh_of(
        tmp_path, vs([{"match": [SNI], "route": [to("secure.example.test")]}], exportTo=["."])
    )
    assert tunnels(mesh, "client.default") == [(("secure.example.test:443",), SECURE)]
    assert tunnels(mesh, "other.other") == []


def test_a_changed_tls_rule_rebuilds_the_shared_table(tmp_path: Path) -> None:
    """A tls rule whose hosts name no service changes no service's virtual
    host (impact's ``routes`` is empty): the table still changes, and an
    unchanged rule keeps the same table object (nothing pushed)."""
    before = mesh_of(tmp_path, vs([{"match": [SNI], "route": [to("secure.example.test")]}]))
    after = mesh_of(tmp_path, vs([{"match": [SNI], "route": [to("other.example.test")]}]))
    proxy = proxy_from_node("client.default", {}, before)
    table = build_sidecar_route_table(before, proxy)
    assert build_sidecar_route_table(before, proxy, table, frozenset()) is table
    rebuilt = build_sidecar_route_table(after, proxy, table, frozenset())
    (config,) = rebuilt.resources.messages.values()
    (tunnel,) = [v for v in config.virtual_hosts if v.name.startswith("connect|")]
    assert tunnel.routes[0].route.cluster == OTHER
