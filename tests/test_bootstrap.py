"""`envoy --mode validate` accepts every kind of bootstrap `sailplane bootstrap` writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.procs import ENVOY, PYTHON

MESH = Path(__file__).resolve().parents[1] / "sailplane" / "examples" / "weather" / "mesh"

VARIANTS = {
    "plaintext-ip": ["--xds-address", "127.0.0.1:15010"],
    "plaintext-dns": ["--xds-address", "sailplane:15010"],
    "secure": ["--xds-address", "sailplane:15012", "--secure"],
    "gateway-role": ["--xds-address", "127.0.0.1:15010", "--role", "gateway"],
    "custom-addresses": [
        "--xds-address",
        "127.0.0.1:15010",
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
