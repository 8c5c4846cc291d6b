"""The performance harness runs end to end at a tiny size, so it never rots.

No timing assertions: only that every scenario completes, every simulated
proxy converged, and the JSON has the shape ``--compare`` relies on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main

SERVICES, PORTS, PROXIES = 6, 2, 4


def test_quick_run_writes_well_formed_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    args = ["--quick", "--services", str(SERVICES), "--proxies", str(PROXIES), "--json", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())

    assert doc["schema"] == 1
    assert {"created", "machine", "params"} <= doc.keys()
    assert doc["params"]["services"] == SERVICES
    scenarios = doc["scenarios"]
    assert set(scenarios) == {"translate", "fanout", "rss"}

    translate = scenarios["translate"]
    assert translate["ms"] > 0
    assert translate["consistent"] is True
    assert translate["resources"]["endpoints"] == SERVICES * PORTS
    assert translate["resources"]["clusters"] >= SERVICES * PORTS

    fanout = scenarios["fanout"]
    assert fanout["proxies"] == PROXIES
    assert fanout["client_errors"] == 0, fanout["client_first_error"]
    assert fanout["cold_sync_ms"] > 0
    assert fanout["push_ms"] >= fanout["push_apply_ms"] > 0
    assert fanout["push_proxies_changed"] == PROXIES
    assert fanout["push_responses"] >= PROXIES
    assert fanout["push_bytes_sent"] > 0
    # An endpoint change is translated incrementally: only the changed
    # service's assignments are encoded (once, for all streams), nothing else.
    assert fanout["push_apply_mode"] == "endpoints"
    assert fanout["push_encoded_by_type"] == {"endpoints": PORTS}
    # State of the world delivers every assignment to every stream.
    assert fanout["push_delivered_by_type"]["endpoints"] == PROXIES * SERVICES * PORTS

    assert 0 < scenarios["rss"]["after_push_mb"] <= scenarios["rss"]["peak_mb"]

    capsys.readouterr()
    assert main(["--compare", str(out), str(out)]) == 0
    table = capsys.readouterr().out
    assert "fanout.push_ms" in table
    assert "1.00" in table


def test_delta_run_at_ci_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """50 services x 2 subsets, 100 delta proxies, repeated endpoint changes."""
    out = tmp_path / "delta.json"
    args = ["--quick", "--services", "50", "--workloads", "2", "--subsets", "2", "--proxies", "100"]
    args += ["--delta", "--changes", "3", "--only", "fanout", "--json", str(out)]
    assert main(args) == 0
    fanout = json.loads(out.read_text())["scenarios"]["fanout"]
    assert fanout["protocol"] == "delta"
    assert fanout["client_errors"] == 0, fanout["client_first_error"]
    assert fanout["changes"] == 3
    assert 0 < fanout["change_to_synced_p50_ms"] <= fanout["change_to_synced_p99_ms"]
    # Delta: the changed service's assignments only (port x 3 clusters: all, v1, v2).
    assert fanout["push_apply_mode"] == "endpoints"
    delivered = {k for k, v in fanout["push_delivered_by_type"].items() if v}
    assert delivered == {"endpoints"}
    assert 0 < fanout["push_delivered_by_type"]["endpoints"] <= 100 * 2 * 3
    capsys.readouterr()
