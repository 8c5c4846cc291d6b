"""The performance harness runs end to end at CI size, so it never rots.

No timing assertions (speed is measured in benchmarks/, not asserted): only
that every scenario completes, every simulated proxy converged after every
saved change, each change was translated and pushed as narrowly as it should
be, and the JSON has the shape ``--compare`` relies on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import QUICK, main

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
    # A weight change: the route table only.
    weight = scenarios["change_weight"]
    assert weight["changes"] == QUICK.changes
    assert weight["translation"] == "routes"
    assert weight["types_pushed"] == ["routes"]
    assert weight["responses_per_change"] == {"routes": QUICK.proxies}
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
    assert set(scenarios) == {"translate", "fanout", "change_weight", "change_endpoint", "rss"}

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
