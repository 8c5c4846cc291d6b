"""Transparent capture, outbound side: virtualOutbound, the 0.0.0.0_PORT
listeners, mesh tcp/tls routes, and Envoy's verdict on all of it."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest

from sailplane.config.loader import load_dir
from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.server.envoycheck import EnvoyNotFound, check_configs, envoy_runner, find_envoy
from sailplane.server.envoystatic import static_config
from sailplane.translate import build_proxy_resources, proxy_from_node
from sailplane.translate.proxy import Capture
from sailplane.translate.transparent_outbound import (
    VIRTUAL_OUTBOUND,
    FilterChain,
    build_transparent_outbound,
)
from sailplane.xds import SnapshotCache

GOLDEN = Path(__file__).parents[1] / "golden" / "config"
CASES = {
    "transparent-out": ("client.default", "canary.default"),
    "transparent-out-registry-only": ("client.default",),
}
REDIRECT = {"INTERCEPTION_MODE": "REDIRECT"}


def _mesh(case: str) -> MeshConfig:
    loaded = load_dir(GOLDEN / case / "in").mesh
    assert loaded is not None
    return loaded


@pytest.fixture(scope="module")
def mesh() -> MeshConfig:
    return _mesh("transparent-out")


def _chains(mesh: MeshConfig, node: str, port: int) -> dict[str, FilterChain]:
    out = build_transparent_outbound(mesh, proxy_from_node(node, REDIRECT, mesh), None)
    (listener,) = [x for x in out.listeners if x.name == f"0.0.0.0_{port}"]
    return {c.name: c for c in listener.filter_chains}


def test_virtual_outbound_catch_all_follows_the_traffic_policy(mesh: MeshConfig) -> None:
    for case, cluster in (
        ("transparent-out", "PassthroughCluster"),
        ("transparent-out-registry-only", "BlackHoleCluster"),
    ):
        m = _mesh(case)
        out = build_transparent_outbound(m, proxy_from_node("client.default", REDIRECT, m), None)
        (virtual,) = [x for x in out.listeners if x.name == VIRTUAL_OUTBOUND]
        assert virtual.use_original_dst.value
        assert virtual.address.socket_address.port_value == 15001
        catch_all = virtual.filter_chains[-1]
        assert cluster in str(catch_all.filters[0].typed_config.value)
        # The transparent sidecar's PassthroughCluster goes to the original destination.
        assert [c.type for c in out.clusters] == [c.ORIGINAL_DST for c in out.clusters]


def test_port_listeners_are_reached_only_through_virtual_outbound(mesh: MeshConfig) -> None:
    out = build_transparent_outbound(mesh, proxy_from_node("client.default", REDIRECT, mesh), None)
    ports = {x.name: x.bind_to_port.value for x in out.listeners if x.name != VIRTUAL_OUTBOUND}
    assert ports == dict.fromkeys(
        [
            "0.0.0.0_443",
            "0.0.0.0_6000",
            "0.0.0.0_6001",
            "0.0.0.0_7000",
            "0.0.0.0_8080",
            "0.0.0.0_9000",
        ],
        False,
    )


def _clusters(chain: FilterChain) -> str:
    return str(chain.filters[0].typed_config.value)


def test_tcp_rules_by_subnet_source_labels_and_weights(mesh: MeshConfig) -> None:
    chains = _chains(mesh, "client.default", 9000)
    by_subnet = chains["VirtualService default/echo tcp[1]"]
    split = chains["VirtualService default/echo tcp[2]"]
    assert [r.address_prefix for r in by_subnet.filter_chain_match.prefix_ranges] == ["10.8.0.12"]
    assert "|v2|" in _clusters(by_subnet) and "|v1|" not in _clusters(by_subnet)
    # The 70/30 rule keeps the address no earlier chain has.
    assert [r.address_prefix for r in split.filter_chain_match.prefix_ranges] == ["10.8.0.11"]
    assert "|v1|" in _clusters(split) and "|v2|" in _clusters(split)
    # The canary client's rule (sourceLabels) is terminal: all of echo to v2.
    canary = _chains(mesh, "canary.default", 9000)["VirtualService default/echo tcp[0]"]
    assert "|v1|" not in _clusters(canary)


def test_chains_envoy_could_not_tell_apart_are_noted(mesh: MeshConfig) -> None:
    out = build_transparent_outbound(mesh, proxy_from_node("client.default", REDIRECT, mesh), None)
    assert out.notes == (
        "port 9000: VirtualService default/echo tcp[2] (echo.default.svc.cluster.local) loses "
        "['10.8.0.12/32']: VirtualService default/echo tcp[1] takes the same connections",
        "port 9000: other-db.example.test (other-db.example.test) is left out: "
        "named-db.example.test takes the same connections",
    )


def test_transparent_mode_replaces_the_http_proxy_listener(mesh: MeshConfig) -> None:
    proxy = proxy_from_node("client.default", REDIRECT, mesh)
    names = [x.name for x in build_proxy_resources(mesh, proxy).listeners]
    assert VIRTUAL_OUTBOUND in names and "127.0.0.1_15001" not in names
    plain = build_proxy_resources(mesh, dataclasses.replace(proxy, capture=Capture.PROXY))
    assert VIRTUAL_OUTBOUND not in [x.name for x in plain.listeners]


@pytest.mark.parametrize("case", sorted(CASES))
def test_envoy_accepts_the_outbound_side(case: str) -> None:
    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    m = _mesh(case)
    controller = Controller(SnapshotCache(), trust_domain=m.trust_domain)
    controller.apply(m)
    configs = []
    for node_id in CASES[case]:
        proxy = proxy_from_node(node_id, REDIRECT, m)
        proven = m.spiffe_id(proxy.namespace, proxy.workload.service_account)
        snapshot = controller.snapshot_for(dataclasses.replace(proxy, proven_identity=proven))
        configs.append(static_config(proxy.workload, snapshot))
    with tempfile.TemporaryDirectory(prefix="sailplane-test-") as scratch:
        rejections = check_configs(configs, envoy_runner(envoy, Path(scratch)))
    assert not rejections, [r.format() for r in rejections]


BAD_ADDRESSES = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger}
spec:
  hosts: [ledger.example.test]
  addresses: [192.168.50.0/24, not-an-address]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger}
spec:
  hosts: [ledger.example.test]
  tcp:
  - match: [{destinationSubnets: [10.1.0.0/16, 10.1.0.300]}]
    route: [{destination: {host: ledger.example.test}}]
"""


def test_addresses_and_destination_subnets_are_checked(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(BAD_ADDRESSES)
    result = load_dir(tmp_path)
    found = [d.format() for d in result.diagnostics]
    assert len(found) == 2, found
    addresses, subnets = sorted(found, key=lambda d: "ServiceEntry" not in d)
    assert addresses.startswith("mesh.yaml:6:") and "spec.addresses[1]" in addresses
    assert "'not-an-address' is not an IP address or CIDR block" in addresses
    assert subnets.startswith("mesh.yaml:15:")
    assert "spec.tcp[0].match[0].destinationSubnets[1]: '10.1.0.300'" in subnets


def test_a_port_of_unknown_protocol_is_sniffed(mesh: MeshConfig) -> None:
    """Istio's sniffing: http_inspector with a timeout it goes on after;
    HTTP (by http_inspector's ALPN) to the HCM, for any address and for
    the service's own (Envoy matches addresses first), asking for Istio's
    HTTP mTLS ALPNs; the rest to the service's TCP chain."""
    out = build_transparent_outbound(mesh, proxy_from_node("client.default", REDIRECT, mesh), None)
    (listener,) = [x for x in out.listeners if x.name == "0.0.0.0_6000"]
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.http_inspector"]
    assert listener.continue_on_listener_filters_timeout
    assert listener.listener_filters_timeout.seconds == 1
    chains = {c.name: c for c in listener.filter_chains}
    tcp = chains["sniffed.default.svc.cluster.local"]
    assert not tcp.filter_chain_match.application_protocols
    assert [r.address_prefix for r in tcp.filter_chain_match.prefix_ranges] == ["10.8.0.21"]
    for name, prefixes in (("0.0.0.0_6000-http", []), ("0.0.0.0_6000-http-sniffed", ["10.8.0.21"])):
        match = chains[name].filter_chain_match
        assert list(match.application_protocols) == ["http/1.0", "http/1.1", "h2c"]
        assert [r.address_prefix for r in match.prefix_ranges] == prefixes
        assert "istio-http/1.1" in str(chains[name].filters[0].typed_config.value)
