"""The house rules, checked with the suite (so CI enforces them): ruff's lint
and format, and mypy --strict over the package, the tests and the benchmarks
(pyproject.toml pins both tools, so a new release cannot fail a clean
checkout). The import arrows are tests/unit/test_architecture.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TREES = ["sailplane", "tests", "benchmarks"]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *TREES],
        ["ruff", "format", "--check", *TREES],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_house_rules(command: list[str]) -> None:
    tool = BIN / command[0]
    if not tool.exists():
        pytest.fail(f"{tool} is not installed: pip install -e '.[test]'")
    done = subprocess.run(
        [str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
