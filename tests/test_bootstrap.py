"""`envoy --mode validate` accepts every kind of bootstrap `sailplane bootstrap` writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sailplane.config.loader import load_dir
from sailplane.translate.bootstrap import bootstrap_yaml, build_bootstrap
from tests.support.procs import ENVOY, PYTHON

MESH = Path(__file__).resolve().parents[1] / "sailplane" / "examples" / "weather" / "mesh"

VARIANTS = {
    "secure-ip": ["--xds-address", "127.0.0.1:15012"],
    "secure-dns": ["--xds-address", "sailplane:15012"],
    "secure-flag": ["--xds-address", "sailplane:15012", "--secure"],
    "plaintext": ["--xds-address", "127.0.0.1:15010", "--plaintext"],
    "replicas": ["--xds-address", "127.0.0.1:15012", "--xds-address", "sailplane-b:15012"],
    "gateway-role": ["--xds-address", "127.0.0.1:15012", "--role", "gateway"],
    "custom-addresses": [
        "--xds-address",
        "127.0.0.1:15012",
        "--admin-address",
        "127.0.0.5:15000",
        "--outbound-address",
        "127.0.0.6:15001",
        "--app-address",
        "127.0.0.7",
    ],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_envoy_accepts_bootstrap(variant: str, tmp_path: Path) -> None:
    out = tmp_path / "bootstrap.yaml"
    subprocess.run(
        [
            PYTHON,
            "-m",
            "sailplane",
            "bootstrap",
            "weather-frontend",
            "--config-dir",
            str(MESH),
            "--ca-dir",
            str(tmp_path / "ca"),
            "-o",
            str(out),
            *VARIANTS[variant],
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    document = yaml.safe_load(out.read_text())
    assert document["node"]["id"] == "weather-frontend.default"
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(out), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_unknown_workload_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "sailplane",
            "bootstrap",
            "no-such-workload",
            "--config-dir",
            str(MESH),
            "--xds-address",
            "127.0.0.1:15010",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no WorkloadEntry default/no-such-workload" in result.stderr
    assert "weather-frontend.default" in result.stderr


def _xds_cluster(bootstrap: Path) -> dict[str, object]:
    document = yaml.safe_load(bootstrap.read_text())
    (cluster,) = [c for c in document["static_resources"]["clusters"] if c["name"] == "xds-grpc"]
    return cluster  # type: ignore[no-any-return]


def test_bootstrap_is_mtls_by_default_and_plaintext_only_when_asked(tmp_path: Path) -> None:
    def bootstrap(out_dir: Path, *extra: str) -> Path:
        out_dir.mkdir()
        out = out_dir / "bootstrap.yaml"
        subprocess.run(
            [PYTHON, "-m", "sailplane", "bootstrap", "weather-frontend", "--config-dir",
             str(MESH), "--ca-dir", str(tmp_path / "ca"), "-o", str(out), *extra],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return out

    secure = bootstrap(tmp_path / "secure", "--xds-address", "127.0.0.1:15012")
    assert "transport_socket" in _xds_cluster(secure)
    key = secure.parent / "weather-frontend.default.key.pem"
    assert key.stat().st_mode & 0o077 == 0, "the private key is readable by others"
    assert b"PRIVATE KEY" in key.read_bytes()

    plain = bootstrap(tmp_path / "plain", "--xds-address", "127.0.0.1:15010", "--plaintext")
    assert "transport_socket" not in _xds_cluster(plain)
    assert sorted(p.name for p in plain.parent.iterdir()) == ["bootstrap.yaml"]


@pytest.mark.parametrize(
    "addresses",
    [
        (("127.0.0.1", 15012), ("127.0.0.2", 15013)),
        (("127.0.0.1", 15012), ("sailplane-b", 15012)),
    ],
    ids=["addresses", "an-address-and-a-name"],
)
def test_a_bootstrap_names_every_replica_and_envoy_accepts_it(
    addresses: tuple[tuple[str, int], ...], tmp_path: Path
) -> None:
    """#22: one endpoint per replica in the xDS cluster; Envoy reconnects to
    another when its replica is gone (tests/e2e/test_replicas.py)."""
    mesh = load_dir(MESH).mesh
    assert mesh is not None
    bootstrap = build_bootstrap(mesh.workloads_by_id["weather-frontend.default"], addresses)
    out = tmp_path / "bootstrap.yaml"
    out.write_text(bootstrap_yaml(bootstrap))
    cluster = _xds_cluster(out)
    assert cluster["type"] == ("STATIC" if addresses[1][0][0].isdigit() else "STRICT_DNS")
    (group,) = cluster["load_assignment"]["endpoints"]  # type: ignore[index]
    served = [e["endpoint"]["address"]["socket_address"] for e in group["lb_endpoints"]]
    assert [(a["address"], a["port_value"]) for a in served] == list(addresses)
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(out), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
