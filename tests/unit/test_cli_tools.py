"""Issue #15: the tools tell the whole truth, and a newcomer's first commands
work. ``validate`` shows every problem of every object (with "did you mean"),
an empty directory is an error, ``diff`` fails on a directory with errors,
exit codes are documented, every option has help, ``status`` and ``ca show``
say what is (and is not) there."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sailplane.cli import build_parser, main
from sailplane.cli import status as cli_status
from sailplane.cli.diff import diff_has_changes, format_diff
from sailplane.cli.status import format_status
from sailplane.server.ops.monitor import MonitorServer, Response
from sailplane.server.ops.views import dry_run
from sailplane.xds import SnapshotCache
from tests.unit.test_config_serve import REGISTRY, Running, running, split

__all__ = ["running"]  # the fixture, shared with test_config_serve

SPLIT_110 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backnd}
      wieght: 60
    - destination: {host: bakend}
      weight: 50
    - destination: {host: backend, subset: v3}
      weight: 60
"""


def validate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- validate: every problem, "did you mean", nothing to validate ---------------


def test_validate_shows_every_problem_of_an_object_in_one_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The weights summing to 110 no longer hide the two unknown hosts and
    the unknown subset (warnings, as istioctl analyze's); the object is
    still rejected, for its weights."""
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "vs.yaml").write_text(SPLIT_110)
    code, out, err = validate(capsys, "--config-dir", str(tmp_path), "--format", "json")
    report = json.loads(out)
    assert code == 1
    found = [(d["field"], d["message"]) for d in report["diagnostics"]]
    route = "spec.http[0].route"
    for field, start in [
        (route, "weights sum to 110, not 100"),
        (f"{route}[0].destination.host", "unknown host 'backnd'"),
        (f"{route}[1].destination.host", "unknown host 'bakend'"),
        (f"{route}[2].destination.subset", "unknown subset 'v3'"),
    ]:
        assert any(f == field and m.startswith(start) for f, m in found), (field, found)
    states = {(o["kind"], o["name"]): o["state"] for o in report["objects"]}
    assert states[("VirtualService", "split")] == "rejected"
    assert "invalid: 1 error, 4 warnings" in err  # and the misspelt wieght


def test_unknown_fields_and_values_say_did_you_mean(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = "trafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}}\n  subsets: ["
    (tmp_path / "registry.yaml").write_text(REGISTRY.replace("subsets: [", policy))
    (tmp_path / "vs.yaml").write_text(split(90, 10).replace("weight: 90", "wieght: 90"))
    _, out, _ = validate(capsys, "--config-dir", str(tmp_path))
    assert "unknown field 'wieght' (did you mean 'weight'?)" in out
    assert "unknown value 'ROUND_ROBBIN' (did you mean 'ROUND_ROBIN'?); expected one of" in out


def test_no_close_match_no_suggestion() -> None:
    from sailplane.config.reader import did_you_mean

    assert did_you_mean("wieght", ("weight", "headers")) == " (did you mean 'weight'?)"
    assert did_you_mean("Hosts", ("hosts",)) == " (did you mean 'hosts'?)"
    assert did_you_mean("zzz", ("weight", "headers")) == ""


DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({}, "no .yaml or .yml files"),
        ({"deploy.yaml": DEPLOYMENT}, "no mesh objects in 1 file"),
        ({"notes.yaml": "# nothing here\n"}, "no mesh objects in 1 file"),
    ],
    ids=["empty", "other-kinds", "comments-only"],
)
def test_nothing_to_validate_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: dict[str, str], says: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code, _, err = validate(capsys, "--config-dir", str(tmp_path))
    assert code == 1
    assert says in err and "invalid" in err
    code, out, _ = validate(capsys, "--config-dir", str(tmp_path), "--format", "json")
    assert (code, json.loads(out)["valid"], json.loads(out)["empty"]) == (1, False, True)


def test_exit_codes_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    texts = {}
    for command in ("validate", "diff", ""):
        with pytest.raises(SystemExit):
            main([command, "--help"] if command else ["--help"])
        texts[command] = " ".join(capsys.readouterr().out.split())
    assert "Exit status, for CI and pre-commit hooks: 0 success, 1 errors, 2 usage" in texts[""]
    assert "0 valid" in texts["validate"] and "1 errors" in texts["validate"]
    assert "2 usage" in texts["validate"]
    assert "0 no change, 1 changes, 2 errors: DIR has errors" in texts["diff"]
    assert main(["validate", "--config-dir", "/nonexistent/mesh"]) == 2


# -- diff -----------------------------------------------------------------------


def test_a_dry_run_says_would_apply() -> None:
    texts = [("registry.yaml", REGISTRY), ("vs.yaml", split(90, 10))]
    answer = dry_run(texts, None, SnapshotCache(), {})
    assert answer["verdict"] == "would apply"
    assert diff_has_changes(answer)
    broken = dry_run([*texts[:1], ("vs.yaml", SPLIT_110)], None, SnapshotCache(), {})
    assert broken["verdict"] == "would apply"  # the rest of the directory would
    assert "the objects with errors would not be applied" in format_diff(broken)


async def test_diff_of_a_directory_with_errors_exits_2(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "next"
    other.mkdir()
    for name in ("registry.yaml", "gateway.yaml", "vs.yaml"):
        (other / name).write_text((running.config_dir / name).read_text())
    (other / "vs.yaml").write_text(split(60, 50))
    assert await running.cli("diff", "--config-dir", str(other)) == 2
    out = capsys.readouterr().out
    assert "weights sum to 110, not 100" in out
    assert "1 error: the objects with errors would not be applied" in out
    assert await running.cli("diff", "--config-dir", str(other), "--json") == 2
    assert json.loads(capsys.readouterr().out)["verdict"] == "would apply"


# -- status ---------------------------------------------------------------------


async def test_status_finds_a_proxy_by_name_in_namespace_default(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await running.cli("status", "--proxy", "frontend") == 0
    assert capsys.readouterr().out.startswith("PROXY frontend.default (connected")
    assert await running.cli("status", "--proxy", "nobody") == 1
    assert "no" in capsys.readouterr().err


def test_an_empty_status_says_no_proxy_is_connected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_status, "fetch_json", lambda address, path, body=None: [])
    assert main(["status"]) == 0
    assert capsys.readouterr().out == "no proxy is connected\n"


def test_sync_states_are_spelled_as_the_monitor_spells_them() -> None:
    streams: list[dict[str, Any]] = [
        {"proxy": "a.default", "types": {"clusters": {"state": "SYNCED", "sent": "abcdef12"}}},
        {"proxy": "b.default", "types": {"secrets": {"state": "NOT_SENT"}}},
    ]
    text = format_status(streams)
    assert "NOT_SENT" in text and "NOT SENT" not in text


# -- flags ------------------------------------------------------------------------


def _parsers(
    parser: argparse.ArgumentParser, name: str = "sailplane"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                found += _parsers(child, f"{name} {sub}")
    return found


def test_every_option_has_help() -> None:
    missing = [
        f"{name} {'/'.join(action.option_strings)}"
        for name, parser in _parsers(build_parser())
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert not missing


def test_logging_flags_go_before_or_after_any_command() -> None:
    parser = build_parser()
    leaves = [
        name.split()[1:]
        for name, p in _parsers(parser)
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]
    store = ["--config-store", "etcd://h:1"]
    required = {
        "diff": ["--config-dir", "d"],
        "bootstrap": ["--xds-address", "h:1"],
        "apply": ["-f", "d", *store],
        "get": store,
        "delete": ["kind", "name", *store],
    }
    assert len(leaves) >= 9
    for words in leaves:
        extra = required.get(words[0], [])
        if words[-1] == "issue":
            extra = ["--out-dir", "o", "w"]
        if words[-1] == "intermediate":
            extra = ["--out-dir", "o", "replica-a"]
        after = parser.parse_args([*words, *extra, "--log-level", "debug", "--log-format", "json"])
        before = parser.parse_args(["--log-level", "debug", "--log-format", "json", *words, *extra])
        assert (after.log_level, after.log_format) == ("debug", "json"), words
        assert (before.log_level, before.log_format) == ("debug", "json"), words
        plain = parser.parse_args([*words, *extra])
        assert (plain.log_level, plain.log_format) == ("info", "text"), words


# -- ca ---------------------------------------------------------------------------


def test_ca_show_without_a_ca_is_an_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    assert main(["ca", "show", "--ca-dir", str(ca_dir)]) == 1
    assert "no CA here" in capsys.readouterr().err
    assert not ca_dir.exists()
    assert main(["ca", "init", "--ca-dir", str(ca_dir)]) == 0
    capsys.readouterr()
    assert main(["ca", "show", "--ca-dir", str(ca_dir)]) == 0
    assert "fingerprint  SHA256" in capsys.readouterr().out


# -- monitor ------------------------------------------------------------------------


def test_get_on_a_post_only_endpoint_is_a_405_that_says_so() -> None:
    server = MonitorServer()
    server.route("/ready", lambda query: Response.text("ok\n"))
    server.post_route("/debug/diff", lambda query, body: Response.json({}))
    answer = asyncio.run(server._dispatch("GET", "/debug/diff"))
    assert answer.status == 405
    assert ("Allow", "POST") in answer.headers
    assert b"/debug/diff takes POST only" in answer.body
    wrong = asyncio.run(server._dispatch("DELETE", "/ready"))
    assert (wrong.status, wrong.headers) == (405, (("Allow", "GET, HEAD"),))
    assert server.endpoints() == ["/ready", "POST /debug/diff"]


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """INFO records captured from the start (set before ``running`` starts
    the plane: the test alone must not depend on another's logging set-up)."""
    caplog.set_level(logging.INFO, logger="sailplane")
    return caplog


async def test_the_monitor_answers_405_over_http_and_the_log_lists_every_endpoint(
    info_logs: pytest.LogCaptureFixture, running: Running
) -> None:
    caplog = info_logs

    def get() -> tuple[int, str, str]:
        try:
            urllib.request.urlopen(running.url("/debug/diff"))
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Allow") or "", exc.read().decode()
        raise AssertionError("a GET on /debug/diff succeeded")

    status, allow, body = await asyncio.to_thread(get)
    assert (status, allow) == (405, "POST")
    assert "takes POST only" in body
    started = [
        r.getMessage()
        for r in caplog.get_records("setup")
        if r.levelno == logging.INFO and r.getMessage().startswith("monitor on http://")
    ]
    assert len(started) == 1
    for endpoint in running.plane.monitor.endpoints():
        assert endpoint in started[0]
    assert "POST /debug/diff" in started[0] and "/debug/proxyz" in started[0]
