"""The attacks of issue #14, as tests: key theft, proxy hijack, shared ports.

Each test plays the attacker against a real control plane (and real Envoys
and apps where traffic is involved) and asserts on what the attacker gets
and on what the real proxy's traffic does.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from sailplane.xds.client import AdsClient
from sailplane.xds.types import CLUSTER, LISTENER, SECRET
from tests.support.mesh import Mesh, WorkloadSpec, service
from tests.support.procs import ENVOY, PYTHON, free_port, http_get, wait_for

pytestmark = pytest.mark.e2e

PLAINTEXT_REFUSAL = "secrets are served only on the mTLS xDS port"


def _backend(mesh: Mesh) -> WorkloadSpec:
    backend = mesh.workload(
        "weather-backend",
        {"app": "weather-backend", "version": "single"},
        service_account="weather-backend",
    )
    mesh.write_registry([service("weather-backend")])
    return backend


async def _ask_for_keys(target: str, node_id: str) -> tuple[int, bool]:
    """As an attacker on the plaintext port: claim ``node_id``, subscribe to
    clusters and to the workload's secrets. Returns (clusters received,
    whether any secret response came)."""
    async with AdsClient(target, node_id) as client:
        client.request(CLUSTER)
        clusters = await client.recv(10)
        client.request(SECRET, ["default", "ROOTCA"])
        try:
            await client.recv(3)
        except TimeoutError:
            return len(clusters.resources), False
        return len(clusters.resources), True


def test_plaintext_port_serves_configuration_but_no_keys(mesh: Mesh) -> None:
    backend = _backend(mesh)
    mesh.start_control_plane()
    clusters, got_secrets = asyncio.run(_ask_for_keys(f"127.0.0.1:{mesh.xds_port}", backend.id))
    assert clusters > 0, "the plaintext port still serves configuration"
    assert not got_secrets, "the plaintext port answered a request for the workload's key"

    # A real Envoy bootstrapped for the plaintext port: no key, and the
    # reason in status and in the log.
    mesh.start_app(backend)
    mesh.start_envoy(backend, "--plaintext")
    stream = wait_for(
        lambda: next(
            (
                s
                for s in mesh.syncz()
                if s["proxy"] == backend.id and s["types"].get("secrets", {}).get("error")
            ),
            None,
        ),
        what="the secrets refusal in /debug/syncz",
    )
    assert stream["types"]["secrets"]["state"] == "REFUSED"
    assert PLAINTEXT_REFUSAL in stream["types"]["secrets"]["error"]
    assert PLAINTEXT_REFUSAL in mesh.plane.log()  # type: ignore[union-attr]
    secrets = mesh.admin(backend, "/config_dump?resource=dynamic_active_secrets")
    assert "PRIVATE KEY" not in secrets and "private_key" not in secrets


async def _fetch_secret(target: str, node_id: str, channel: Any) -> bytes:
    """The ``default`` secret's certificate chain, asked for through ``channel``."""
    async with AdsClient(target, node_id, channel=channel) as client:
        client.request(SECRET, ["default"])
        response = await client.recv(10)
        secret = secret_pb2.Secret()
        response.resources[0].Unpack(secret)
        return bytes(secret.tls_certificate.certificate_chain.inline_bytes)


def test_mtls_port_gives_each_identity_only_its_own_key(mesh: Mesh, tmp_path: Path) -> None:
    """Through an Envoy that originates mTLS with a certificate of the
    frontend's service account (as a stolen bootstrap certificate would be
    used): the frontend's node gets the frontend's key; claiming the backend
    gets nothing."""
    frontend = mesh.workload(
        "weather-frontend", {"app": "weather-frontend"}, service_account="weather-frontend"
    )
    backend = mesh.workload(
        "weather-backend", {"app": "weather-backend"}, service_account="weather-backend"
    )
    mesh.write_registry([service("weather-frontend"), service("weather-backend")])
    mesh.start_control_plane()
    port = _mtls_forwarder(mesh, tmp_path, "weather-frontend")

    import grpc

    from sailplane.ca import identity_of_certificate

    async def attempts() -> tuple[str, str]:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target) as channel:
            chain = await _fetch_secret(target, frontend.id, channel)
        own = identity_of_certificate(chain)
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                await _fetch_secret(target, backend.id, channel)
            except grpc.aio.AioRpcError as exc:
                return own, f"{exc.code().name}: {exc.details()}"
        return own, "got the backend's key"

    own, other = asyncio.run(attempts())
    assert own == "spiffe://cluster.local/ns/default/sa/weather-frontend"
    assert other.startswith("PERMISSION_DENIED"), other
    assert "belongs to spiffe://cluster.local/ns/default/sa/weather-backend" in other
    # Keys were served, and none is in the control plane's (debug) log.
    assert "PRIVATE KEY" not in mesh.plane.log()  # type: ignore[union-attr]


def _mtls_forwarder(mesh: Mesh, tmp_path: Path, service_account: str) -> int:
    """A plaintext port that reaches the control plane's mTLS xDS port with a
    client certificate of ``service_account`` (minted by `sailplane ca issue`):
    a Python gRPC client cannot check a SPIFFE (URI-only) server certificate,
    Envoy can. Returns the plaintext port."""
    certs = tmp_path / f"stolen-{service_account}"
    subprocess.run(
        [PYTHON, "-m", "sailplane", "ca", "issue", "thief", "--service-account",
         service_account, "--ca-dir", str(mesh.ca_dir), "--out-dir", str(certs)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    tls_context = {
        "alpn_protocols": ["h2"],  # gRPC servers require HTTP/2 by ALPN
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(certs / "cert-chain.pem")},
                "private_key": {"filename": str(certs / "key.pem")},
            }
        ],
        "validation_context": {"trusted_ca": {"filename": str(certs / "root-cert.pem")}},
    }
    config = {
        "static_resources": {
            "listeners": [
                {
                    "name": "forward",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": "forward",
                            "cluster": "xds",
                        },
                    }]}],
                }
            ],
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {
                            "address": "127.0.0.1", "port_value": mesh.secure_xds_port}}}}
                    ]}]},
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                            "common_tls_context": tls_context,
                        },
                    },
                }
            ],
        }
    }  # fmt: skip
    bootstrap = tmp_path / f"forwarder-{service_account}.yaml"
    bootstrap.write_text(yaml.safe_dump(config))
    mesh.group.start(
        f"envoy-forwarder-{service_account}",
        [ENVOY, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
         "--base-id", str(port), "--log-level", "warning"],
    )  # fmt: skip
    wait_for(lambda: _connects(port), what="the mTLS forwarder listening")
    return port


def _connects(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def _rogue_stream(target: str, node_id: str, metadata: dict[str, str]) -> Iterator[None]:
    """A second ADS stream claiming ``node_id`` with other metadata, held open
    (in a thread of its own) until the block ends."""
    ready = threading.Event()
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def hold() -> None:
        async with AdsClient(target, node_id, metadata) as client:
            client.request(CLUSTER)
            client.request(LISTENER)
            await client.recv(10)
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(hold())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "the rogue stream never got a response"
        assert not failure, failure
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _instances(address: str, count: int = 20) -> Counter[str]:
    """Which app answered each of ``count`` fresh connections to the backend's
    inbound port (plaintext: PERMISSIVE)."""
    seen: Counter[str] = Counter()
    host, port = address.split(":")
    for _ in range(count):
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            connection.request("GET", "/api/weather")
            response = connection.getresponse()
            body = response.read()
            seen[json.loads(body).get("instance", "?") if response.status == 200 else "error"] += 1
        except OSError:
            seen["error"] += 1
        finally:
            connection.close()
    return seen


@pytest.mark.parametrize("port", ["plaintext", "mtls-same-account"])
def test_a_second_stream_cannot_hijack_a_connected_proxy(
    mesh: Mesh, tmp_path: Path, port: str
) -> None:
    backend = _backend(mesh)
    attacker = mesh.external("attacker")
    mesh.start_control_plane()
    mesh.start_app(backend)
    mesh.start_app(attacker)  # listens on the attacker's app address
    mesh.start_envoy(backend)
    mesh.wait_synced(backend.id)
    mesh.wait_listening(backend)
    inbound = f"{backend.address}:{backend.port}"
    assert _instances(inbound) == Counter({backend.name: 20})

    if port == "plaintext":
        target = f"127.0.0.1:{mesh.xds_port}"
    else:
        target = f"127.0.0.1:{_mtls_forwarder(mesh, tmp_path, backend.service_account)}"
    claims = {
        "sailplane.app_address": attacker.app_address,
        "sailplane.outbound_address": f"{attacker.address}:15001",
    }
    with _rogue_stream(target, backend.id, claims):
        streams = [s["proxy"] for s in mesh.syncz() if s["proxy"].startswith(backend.id)]
        assert len(streams) == 2, streams  # the rogue has a snapshot of its own
        assert _instances(inbound) == Counter({backend.name: 20})
    # After the rogue left, and after an unrelated reload, still the real app.
    version = mesh.configz()["version"]
    mesh.write("unrelated.yaml", [service("something-else", port=7000)])
    wait_for(lambda: mesh.configz()["version"] != version, what="the unrelated reload")
    assert _instances(inbound) == Counter({backend.name: 20})
    dump = json.loads(mesh.http(f"/debug/config_dump?proxy={backend.id}"))
    assert attacker.app_address not in json.dumps(dump["clusters"])


def test_a_second_control_plane_on_a_taken_port_exits_at_once(mesh: Mesh) -> None:
    backend = _backend(mesh)
    mesh.start_control_plane()
    for flag, taken in (
        ("--xds-address", mesh.xds_port),
        ("--secure-xds-address", mesh.secure_xds_port),
        ("--monitor-address", mesh.monitor_port),
    ):
        free = {
            "--xds-address": free_port(),
            "--secure-xds-address": free_port(),
            "--monitor-address": free_port(),
        }
        free[flag] = taken
        second = subprocess.run(
            [PYTHON, "-m", "sailplane", "serve", "--config-dir", str(mesh.config_dir),
             "--ca-dir", str(mesh.ca_dir),
             *(a for f, p in free.items() for a in (f, f"127.0.0.1:{p}"))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"127.0.0.1:{taken}" in lines[0] and "in use" in lines[0], lines[0]
    # The first one never noticed.
    assert http_get(mesh.monitor("/ready"))[0] == 200
    clusters, _ = asyncio.run(_ask_for_keys(f"127.0.0.1:{mesh.xds_port}", backend.id))
    assert clusters > 0
