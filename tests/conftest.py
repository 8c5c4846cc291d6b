from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd import etcd, etcd_cluster, etcd_tls  # noqa: F401  (fixtures: real etcd, or a skip)
from tests.support.mesh import Mesh
from tests.support.procs import ProcessGroup

# Every snapshot the Controller builds is checked for consistency (see controller.py).
os.environ.setdefault("SAILPLANE_CHECK_SNAPSHOTS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files of every stage under tests/golden (and remove orphans)",
    )
    parser.addoption(
        "--update-scoreboard",
        action="store_true",
        help="rewrite tests/conformance/scoreboard.json and README.md's conformance line",
    )


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    group = ProcessGroup(log_dir)
    try:
        yield group
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(group.logs())
        group.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def mesh(processes: ProcessGroup, tmp_path: Path) -> Mesh:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    return Mesh(processes, config_dir)
