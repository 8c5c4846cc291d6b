"""Issue #15, the demo: the live view fits an 80x24 terminal with its config
line and problems in sight, a rejected edit keeps the split counters, the
CA stays in the demo's temporary directory, ``my-mesh/`` is ignored by git."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from sailplane.ca import CA_CERT_FILE
from sailplane.cli import main
from sailplane.demo.run import DemoOptions
from sailplane.demo.screen import objects_in_force
from sailplane.demo.view import Frame, ServiceTLS, StreamView, rich_view
from sailplane.server.plane import ControlPlane, ServeOptions
from tests.unit.test_config_serve import REGISTRY, split

ROOT = Path(__file__).resolve().parents[2]

PROBLEM = (
    "traffic.yaml:{line}:5: IST0106: VirtualService default/weather-backend-service: "
    "spec.http[0].route: weights sum to 110, not 100"
)


def frame(problems: int) -> Frame:
    return Frame(
        elapsed=12.0,
        config_dir="/tmp/sailplane-demo-k2j4h5/mesh",
        ingress_url="http://127.0.10.4:8080/api/weather",
        metrics_url="http://127.0.0.1:15014/metrics",
        version="abcdef123456",
        applied_ago=3.0,
        last_change="update VirtualService default/weather-backend-service",
        configured=[("single", 90), ("multiple", 10)],
        streams=[
            StreamView(
                "ingress", "ingress -> weather-backend", 50.0, Counter(single=9, multiple=1)
            ),
            StreamView(
                "mesh", "weather-frontend -> weather-backend (sidecars)", 5.0, Counter(single=5)
            ),
            StreamView(
                "legacy", "legacy-client (no sidecar) -> weather-backend", 2.0, Counter(refused=3)
            ),
        ],
        services=[
            ServiceTLS("weather-backend", "STRICT", "auto mTLS", 100, 0, 20),
            ServiceTLS("weather-frontend", "PERMISSIVE", "auto mTLS", 10, 0, 0),
        ],
        problems=[PROBLEM.format(line=n) for n in range(problems)],
    )


def drawn(view: Frame, width: int = 80, height: int = 24) -> list[str]:
    console = Console(width=width, height=height, color_system=None)
    with console.capture() as capture:
        console.print(rich_view(view, (width, height)))
    return capture.get().splitlines()


@pytest.mark.parametrize("problems", [0, 1, 5, 12])
def test_the_live_view_fits_80x24_with_config_and_problems_in_sight(problems: int) -> None:
    lines = drawn(frame(problems))
    assert len(lines) <= 24, "\n".join(lines)
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert any(line.startswith("config abcdef123456 applied 3s ago") for line in lines)
    assert any(line.startswith("ingress split configured: single 90") for line in lines)
    assert any("ingress" in line and "50.0" in line for line in lines)  # traffic stays
    if problems:
        assert any(line.startswith("problems (the last good") for line in lines)
        assert any("traffic.yaml:0:5: IST0106" in line for line in lines)
    if problems > 5:
        assert any(f"... and {problems - 5} more" in line for line in lines)


def test_a_tiny_terminal_gives_up_tables_before_the_config_line() -> None:
    lines = drawn(frame(3), height=12)
    assert len(lines) <= 12, "\n".join(lines)
    assert any(line.startswith("config abcdef123456") for line in lines)
    assert any(line.startswith("problems (") for line in lines)


def test_a_big_terminal_gets_the_boxed_tables() -> None:
    lines = drawn(frame(1), width=140, height=50)
    assert any("traffic (split since the last config change)" in line for line in lines)
    assert any("mTLS per service" in line for line in lines)


def test_a_rejected_edit_leaves_what_is_in_force_and_so_the_counters(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "vs.yaml").write_text(split(90, 10))
    plane = ControlPlane(ServeOptions(tmp_path))
    assert plane.reload()
    version, in_force = plane.version, objects_in_force(plane)
    (tmp_path / "vs.yaml").write_text(split(90, 20))  # weights sum to 110: rejected
    plane.reload()
    assert plane.version != version  # the files changed ...
    assert objects_in_force(plane) == in_force  # ... what is served did not
    (tmp_path / "vs.yaml").write_text(split(50, 50))
    assert plane.reload()
    assert objects_in_force(plane) != in_force


def test_the_demo_ca_goes_to_its_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    seen: list[DemoOptions] = []

    def run_demo(options: DemoOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("sailplane.demo.run.run_demo", run_demo)
    assert main(["demo", "--duration", "1"]) == 0
    assert seen[0].authority is None
    assert seen[0].new_authority is not None
    assert not (tmp_path / "state").exists()  # the default CA was neither made nor read
    seen[0].new_authority(tmp_path / "work" / "ca")
    assert (tmp_path / "work" / "ca" / CA_CERT_FILE).exists()
    assert main(["demo", "--ca-dir", str(tmp_path / "mine")]) == 0
    assert seen[1].authority is not None
    assert (tmp_path / "mine" / CA_CERT_FILE).exists()


def test_my_mesh_is_ignored_by_git() -> None:
    assert "my-mesh/" in (ROOT / ".gitignore").read_text().splitlines()


def test_frames_are_plain_values() -> None:
    assert dataclasses.replace(frame(0), problems=["x"]).problems == ["x"]
