"""How the demo chooses its capture mode, and where its pods go: addresses,
names they resolve, and what it refuses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sailplane.config.loader import load_dir
from sailplane.demo.capturemode import CaptureChoice, choose
from sailplane.demo.layout import (
    copy_with_addresses,
    placements,
    pod_addresses,
    pod_hosts,
    pod_subnet,
)
from sailplane.errors import DemoError
from sailplane.model.mesh import MeshConfig
from sailplane.server.plane import embedded_example

UNABLE = "needs root (network namespaces, veth pairs, iptables)"


def example(tmp_path: Path, subnet: str = "10.251.7") -> MeshConfig:
    source = embedded_example()
    mesh = load_dir(source).mesh
    assert mesh is not None
    copy_with_addresses(source, tmp_path, pod_addresses(mesh, subnet))
    copy = load_dir(tmp_path).mesh
    assert copy is not None
    return copy


def test_auto_is_transparent_only_where_pods_can_be_made() -> None:
    root = choose(CaptureChoice.AUTO, None)
    assert root.transparent and "running as root" in root.line()
    assert root.line().startswith("capture: transparent")
    user = choose(CaptureChoice.AUTO, UNABLE)
    assert not user.transparent
    assert user.line().startswith("capture: proxy (transparent capture needs root")
    forced = choose(CaptureChoice.PROXY, None)
    assert not forced.transparent and "--capture proxy" in forced.line()
    assert choose(CaptureChoice.TRANSPARENT, None).transparent


def test_transparent_asked_for_without_root_is_an_error_that_says_why() -> None:
    with pytest.raises(DemoError, match="--capture transparent needs root"):
        choose(CaptureChoice.TRANSPARENT, UNABLE)


def test_pods_get_the_subnet_from_11_and_the_app_behind_the_sidecar(tmp_path: Path) -> None:
    mesh = example(tmp_path)
    assert pod_subnet(mesh) == "10.251.7"
    where = placements(mesh, in_pods=True)
    assert sorted(p.address for p in where) == [f"10.251.7.{k}" for k in range(11, 17)]
    backend = next(p for p in where if p.workload.name == "weather-backend-single")
    assert backend.in_pod and backend.app_address == "127.0.0.1"
    assert backend.app_listen == "0.0.0.0" and backend.admin == ("127.0.0.1", 15000)
    assert backend.sockets() == []  # nothing in the host's namespace


def test_pods_resolve_services_to_an_instance_and_workloads_by_name(tmp_path: Path) -> None:
    mesh = example(tmp_path)
    hosts = pod_hosts(mesh)
    addresses = {w.name: w.address for w in mesh.workloads}
    backends = {addresses["weather-backend-single"], addresses["weather-backend-multiple"]}
    for name in (
        "weather-backend",
        "weather-backend.default",
        "weather-backend.default.svc.cluster.local",
    ):
        assert hosts[name] in backends
    assert hosts["weather-frontend"] == addresses["weather-frontend"]
    assert hosts["ingress-gateway"] == addresses["ingress-gateway"]


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        (("127.77.1.1", "127.77.1.2"), "private IPv4 addresses"),
        (("10.9.9.11", "10.9.8.12"), "on one /24"),
        (("10.9.9.5", "10.9.9.12"), "11 <= K <= 254"),
        (("8.8.8.11", "8.8.8.12"), "private IPv4"),
        (("10.9.9.11", "10.9.9.11"), "two WorkloadEntries have the address 10.9.9.11"),
        (("backend", "10.9.9.12"), "'backend'"),
    ],
)
def test_pods_refuse_addresses_they_cannot_have(
    tmp_path: Path, addresses: tuple[str, str], message: str
) -> None:
    entries = "".join(
        textwrap.dedent(f"""\
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {{name: w{i}}}
            spec: {{address: "{address}", labels: {{app: w}}}}
            """)
        for i, address in enumerate(addresses)
    )
    (tmp_path / "mesh.yaml").write_text(entries)
    mesh = load_dir(tmp_path).mesh
    assert mesh is not None
    with pytest.raises(DemoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pod_subnet(mesh)
