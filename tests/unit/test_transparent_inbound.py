"""Transparent capture, inbound side and the mode's plumbing: the proxy's
INTERCEPTION_MODE, `sailplane bootstrap --capture`, the WorkloadEntry
annotation, and Envoy's verdict on virtualInbound and its clusters."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from sailplane.cli import main
from sailplane.config.loader import load_dir
from sailplane.errors import UnknownProxy
from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.server.envoycheck import EnvoyNotFound, check_configs, envoy_runner, find_envoy
from sailplane.server.envoystatic import static_config
from sailplane.translate import build_proxy_resources, proxy_from_node
from sailplane.translate.bootstrap import build_bootstrap
from sailplane.translate.build import build_routes, routes_key
from sailplane.translate.proxy import Capture
from sailplane.translate.transparent_inbound import VIRTUAL_INBOUND
from sailplane.xds import SnapshotCache

TRANSPARENT = ("--capture", "transparent", "-o")
CASE = Path(__file__).parents[1] / "golden" / "config" / "transparent-in" / "in"


@pytest.fixture(scope="module")
def mesh() -> MeshConfig:
    loaded = load_dir(CASE).mesh
    assert loaded is not None
    return loaded


@pytest.mark.parametrize(
    ("metadata", "capture"),
    [
        ({}, Capture.PROXY),
        ({"INTERCEPTION_MODE": "NONE"}, Capture.PROXY),
        ({"INTERCEPTION_MODE": "REDIRECT"}, Capture.TRANSPARENT),
    ],
    ids=["absent", "none", "redirect"],
)
def test_interception_mode_picks_the_capture(
    mesh: MeshConfig, metadata: dict[str, Any], capture: Capture
) -> None:
    assert proxy_from_node("backend-1.shop", metadata, mesh).capture is capture


@pytest.mark.parametrize(
    ("value", "message"),
    [("TPROXY", "TPROXY is not supported"), ("redirect", "not one of REDIRECT, NONE")],
)
def test_other_interception_modes_are_refused(mesh: MeshConfig, value: str, message: str) -> None:
    with pytest.raises(UnknownProxy, match=message):
        proxy_from_node("backend-1.shop", {"INTERCEPTION_MODE": value}, mesh)


def test_transparent_sidecars_get_virtual_inbound_instead_of_bound_ports(mesh: MeshConfig) -> None:
    proxy = proxy_from_node("backend-1.shop", {"INTERCEPTION_MODE": "REDIRECT"}, mesh)
    listeners = build_proxy_resources(mesh, proxy).listeners
    assert VIRTUAL_INBOUND in [x.name for x in listeners]
    # Only the capture ports bind: the app owns 8080 and 5432.
    bound_ports = {
        x.address.socket_address.port_value
        for x in listeners
        if not x.HasField("bind_to_port") or x.bind_to_port.value
    }
    assert bound_ports <= {15001, 15006}
    bound = build_proxy_resources(mesh, dataclasses.replace(proxy, capture=Capture.PROXY))
    assert VIRTUAL_INBOUND not in [x.name for x in bound.listeners]


def test_routes_are_the_same_in_both_modes(mesh: MeshConfig) -> None:
    """The route tables are shared by routes_key, which has no mode in it:
    the shared outbound table and the proxy's own inbound ones alike."""
    proxy = proxy_from_node("backend-1.shop", {"INTERCEPTION_MODE": "REDIRECT"}, mesh)
    bound_proxy = dataclasses.replace(proxy, capture=Capture.PROXY)
    assert routes_key(mesh, proxy) == routes_key(mesh, bound_proxy)
    assert build_routes(mesh, proxy) == build_routes(mesh, bound_proxy)
    transparent = build_proxy_resources(mesh, proxy).own_routes
    assert transparent == build_proxy_resources(mesh, bound_proxy).own_routes


def test_envoy_accepts_virtual_inbound_and_its_clusters(mesh: MeshConfig) -> None:
    try:
        envoy = find_envoy()
    except EnvoyNotFound as exc:
        pytest.skip(str(exc))
    controller = Controller(SnapshotCache(), trust_domain=mesh.trust_domain)
    controller.apply(mesh)
    configs = []
    for node_id in ("backend-1.shop", "vault-1.secure", "gadget.secure"):
        proxy = proxy_from_node(node_id, {"INTERCEPTION_MODE": "REDIRECT"}, mesh)
        proven = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
        snapshot = controller.snapshot_for(dataclasses.replace(proxy, proven_identity=proven))
        config = static_config(proxy.workload, snapshot)
        assert VIRTUAL_INBOUND in str(config.bootstrap.static_resources.listeners)
        configs.append(config)
    with tempfile.TemporaryDirectory(prefix="sailplane-test-") as scratch:
        rejections = check_configs(configs, envoy_runner(envoy, Path(scratch)))
    assert not rejections, [r.format() for r in rejections]


def _metadata(mesh: MeshConfig, node_id: str, capture: Capture | None) -> dict[str, Any]:
    bootstrap = build_bootstrap(
        mesh.workloads_by_id[node_id], ("127.0.0.1", 15010), capture=capture
    )
    return dict(bootstrap.node.metadata.fields.items())


def test_bootstrap_capture_metadata(mesh: MeshConfig) -> None:
    transparent = _metadata(mesh, "gadget.secure", Capture.TRANSPARENT)
    assert transparent["INTERCEPTION_MODE"].string_value == "REDIRECT"
    # No HTTP proxy: the app's traffic comes by iptables.
    assert "sailplane.outbound_address" not in transparent
    proxy = _metadata(mesh, "gadget.secure", Capture.PROXY)
    assert proxy["INTERCEPTION_MODE"].string_value == "NONE"
    assert proxy["sailplane.outbound_address"].string_value == "127.0.0.1:15001"
    # Neither flag nor annotation: exactly as before (envoy-configs compare bytes).
    assert set(_metadata(mesh, "gadget.secure", None)) == {
        "sailplane.outbound_address",
        "sailplane.app_address",
    }


def test_bootstrap_capture_defaults_to_the_annotation(mesh: MeshConfig) -> None:
    redirect = _metadata(mesh, "backend-1.shop", None)
    assert redirect["INTERCEPTION_MODE"].string_value == "REDIRECT"
    assert "sailplane.outbound_address" not in redirect
    assert _metadata(mesh, "vault-1.secure", None)["INTERCEPTION_MODE"].string_value == "NONE"
    # The flag wins over the annotation.
    assert _metadata(mesh, "backend-1.shop", Capture.PROXY)["INTERCEPTION_MODE"].string_value == (
        "NONE"
    )


def test_bad_annotations_name_file_line_and_field() -> None:
    result = load_dir(CASE)
    assert result.mesh is not None
    found = [d.format() for d in result.diagnostics if "interceptionMode" in d.format()]
    assert len(found) == 2, found
    assert found[0].startswith("mesh.yaml:116:") and "TPROXY is not supported" in found[0]
    assert "metadata.annotations.sidecar.istio.io/interceptionMode" in found[0]
    assert "did you mean 'REDIRECT'" in found[1]
    # A bad annotation drops only its own WorkloadEntry.
    assert "tproxy-1.secure" not in result.mesh.workloads_by_id
    assert "gadget.secure" in result.mesh.workloads_by_id


def test_cli_bootstrap_capture_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gadget.yaml"
    common = ["bootstrap", "gadget", "--namespace", "secure", "--config-dir", str(CASE)]
    code = main([*common, "--xds-address", "127.0.0.1:15010", "--plaintext", "-o", str(out)])
    assert code == 0
    assert "INTERCEPTION_MODE" not in out.read_text()
    code = main(
        [*common, "--xds-address", "127.0.0.1:15010", "--plaintext", *TRANSPARENT, str(out)]
    )
    assert code == 0
    metadata = yaml.safe_load(out.read_text().split("\n", 2)[2])["node"]["metadata"]
    assert metadata == {"INTERCEPTION_MODE": "REDIRECT", "sailplane.app_address": "127.0.0.1"}
    # With --all, the flag sets every sidecar's mode; a gateway has none.
    out_dir = tmp_path / "all"
    argv = ["bootstrap", "--all", "--config-dir", str(CASE), "--xds-address", "h:1"]
    assert main([*argv, "--plaintext", "--capture", "transparent", "-o", str(out_dir)]) == 0
    modes = {
        p.stem: yaml.safe_load(p.read_text().split("\n", 2)[2])["node"]["metadata"].get(
            "INTERCEPTION_MODE"
        )
        for p in out_dir.glob("*.yaml")
    }
    assert modes and set(modes.values()) == {"REDIRECT"}, modes
    capsys.readouterr()
