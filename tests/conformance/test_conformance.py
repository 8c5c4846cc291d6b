"""Istio conformance over every file of ../shared/corpus/istio (issue 17).

Each file is loaded as its page applies it (corpus.yaml says what comes
before it), through sailplane's own loader; each Istio object's verdict
(faithful, reported, wrong) must be the one corpus.yaml expects, every
proxy's configuration for every file must pass ``envoy --mode validate``,
and scoreboard.json and README.md's summary line must say what this run
found. Regenerate both with ``pytest tests/conformance --update-scoreboard``;
see every object's verdict with ``python -m tests.conformance.report``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conformance.harness import (
    CORPUS,
    FAITHFUL,
    SHARED_CORPUS,
    WRONG,
    FileResult,
    evaluate_all,
    istio_objects,
    load_cases,
)
from tests.conformance.scoreboard import (
    README,
    SCOREBOARD,
    envoy_rejections,
    failure_table,
    readme_line,
    readme_section,
    readme_with,
    scoreboard,
    scoreboard_text,
    verdicts,
)

# The corpus README's census of Istio objects.
KINDS = {
    "VirtualService": 54,
    "DestinationRule": 31,
    "AuthorizationPolicy": 22,
    "ServiceEntry": 20,
    "Gateway": 19,
    "Telemetry": 17,
    "PeerAuthentication": 9,
    "Sidecar": 2,
    "Policy": 2,
    "MeshPolicy": 1,
    "RequestAuthentication": 1,
    "EnvoyFilter": 2,
}
MIN_FAITHFUL = 170


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_vendored_corpus_is_whole() -> None:
    files = _files(CORPUS)
    yaml_files = [name for name in files if name.endswith(".yaml")]
    assert len(yaml_files) >= 166 and "README.md" in files, f"{CORPUS} is incomplete"


def test_the_vendored_corpus_is_the_shared_one() -> None:
    if not SHARED_CORPUS.is_dir():
        pytest.skip(f"no shared corpus at {SHARED_CORPUS} to compare the vendored copy with")
    assert _files(CORPUS) == _files(SHARED_CORPUS), "copy ../shared/corpus/istio again"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[FileResult]:
    return evaluate_all(load_cases(), CORPUS, tmp_path_factory.mktemp("conformance"))


def test_corpus_yaml_covers_every_file_and_object() -> None:
    cases = {c.id: c for c in load_cases()}
    files = sorted(
        f"{p.parent.name}/{p.name}" for p in CORPUS.glob("*/*.yaml") if not p.name.startswith("00-")
    )
    assert sorted(cases) == files
    census: Counter[str] = Counter()
    for case in cases.values():
        for name in case.applied:
            assert (CORPUS / case.group / name).is_file(), f"{case.id}: no {name}"
        census.update(o.split(" ", 1)[0] for o in istio_objects(CORPUS / case.id))
    assert dict(census) == KINDS
    assert sum(census.values()) == 180


def test_every_object_is_what_istio_makes_of_it(results: list[FileResult]) -> None:
    table = failure_table(results)
    assert not table, "objects not as corpus.yaml expects:\n" + table


def test_totals(results: list[FileResult]) -> None:
    every = verdicts(results)
    counts = Counter(v.actual for v in every)
    assert len(every) == 180
    assert counts[WRONG] == 0, failure_table(results)
    assert counts[FAITHFUL] >= MIN_FAITHFUL, dict(counts)


@pytest.fixture(scope="module")
def rejections(results: list[FileResult]) -> list[str]:
    return [
        f"{', '.join(files)}: {rejection.format()}"
        for files, rejection in envoy_rejections(results, workers=2)
    ]


def test_envoy_accepts_every_generated_configuration(rejections: list[str]) -> None:
    assert not rejections, "Envoy rejects:\n" + "\n".join(rejections)


def test_scoreboard_and_readme_are_current(
    results: list[FileResult], rejections: list[str], request: pytest.FixtureRequest
) -> None:
    board = scoreboard(results, len(rejections))
    text = scoreboard_text(board)
    assert "pytest-of-" not in text and "/tmp/" not in text, "scratch paths in the scoreboard"
    readme = README.read_text()
    line = readme_line(board)
    if request.config.getoption("--update-scoreboard"):
        SCOREBOARD.write_text(text)
        README.write_text(readme_with(readme, line))
        return
    hint = "run `pytest tests/conformance --update-scoreboard` and review the diff"
    assert SCOREBOARD.is_file(), hint
    assert SCOREBOARD.read_text() == text, f"{SCOREBOARD.name} is out of date; {hint}"
    assert readme_section(readme) == line, f"README.md's conformance line is out of date; {hint}"
