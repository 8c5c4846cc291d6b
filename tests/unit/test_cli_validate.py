"""``sailplane validate``: the serve-time checks, offline, with exit codes for CI.

tests/data/broken holds twelve files with one realistic mistake each and
expected.txt, the exact output (regenerate with
``sailplane validate --config-dir tests/data/broken > tests/data/broken/expected.txt``
and review the diff).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sailplane.cli import main
from sailplane.server.plane import embedded_example

BROKEN = Path(__file__).parents[1] / "data" / "broken"
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*/mesh"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_twelve_broken_files_give_one_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--config-dir", str(BROKEN))
    assert out == (BROKEN / "expected.txt").read_text()
    assert code == 1
    assert "invalid: 9 errors, 3 warnings in 12 files" in err
    # One mistake per file, and every file's mistake found.
    files = sorted(p.name for p in BROKEN.glob("*.yaml"))
    assert len(files) == 12
    assert sorted(line.split(":", 1)[0] for line in out.splitlines()) == files


@pytest.mark.parametrize("example", [embedded_example(), *EXAMPLES], ids=str)
def test_the_examples_are_valid(capsys: pytest.CaptureFixture[str], example: Path) -> None:
    code, out, err = run(capsys, "--config-dir", str(example), "--strict")
    assert (code, out) == (0, ""), err


def test_json_format_carries_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config-dir", str(BROKEN), "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert (report["valid"], report["files"], report["errors"], report["warnings"]) == (
        False,
        12,
        9,
        3,
    )
    subset = next(d for d in report["diagnostics"] if d["file"] == "unknown-subset.yaml")
    assert subset == {
        "file": "unknown-subset.yaml",
        "line": 16,
        "column": 17,
        "severity": "warning",
        "code": "IST0101",
        "object": "VirtualService default/backend-canary",
        "field": "spec.http[0].route[1].destination.subset",
        "message": "unknown subset 'v3' of backend.default.svc.cluster.local: "
        "DestinationRule default/backend does not define it (requests routed there get 503)",
    }
    states = {(o["kind"], o["name"]): o["state"] for o in report["objects"]}
    assert states[("DestinationRule", "backend")] == "active"
    # As Istio: accepted, and Envoy answers 503 for the missing cluster.
    assert states[("VirtualService", "backend-canary")] == "active"


def test_warnings_pass_unless_strict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dr.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: r}\nspec: {host: nowhere}\n"
    )
    code, out, _ = run(capsys, "--config-dir", str(tmp_path))
    assert code == 0
    assert out.startswith("sub/dr.yaml:4:14: warning: IST0101: DestinationRule default/r:")
    code, _, _ = run(capsys, "--config-dir", str(tmp_path), "--strict")
    assert code == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--config-dir", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--format", "xml"])
    assert exc.value.code == 2


def test_validate_translates_for_every_workload_and_checks_each_snapshot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inconsistent snapshot is sailplane's bug, not the user's; validate
    still finds it (here: a Snapshot that says so) and fails, naming the proxy."""
    from sailplane.server.controller import CHECK_SNAPSHOTS
    from sailplane.xds import Snapshot

    checked: list[int] = []

    def consistent(self: Snapshot, may_dangle: object = ()) -> list[str]:
        checked.append(1)
        return ["route config '5000' is named by a listener but not sent"]

    monkeypatch.delenv(CHECK_SNAPSHOTS, raising=False)  # the suite's own check raises
    monkeypatch.setattr(Snapshot, "consistent", consistent)
    code, out, err = run(capsys, "--config-dir", str(embedded_example()))
    assert code == 1
    assert len(checked) == 6  # the example's six workloads
    assert (
        "internal error: the snapshot for proxy weather-frontend.default would be "
        "inconsistent (route config '5000' is named by a listener but not sent)"
    ) in out
    assert "invalid: 6 errors" in err
