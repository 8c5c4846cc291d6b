"""Documents that break (issue #15): a typo never changes routing.

A document whose envelope breaks (kind, apiVersion, metadata.name) keeps what
it defined in force; a file that does not parse (syntax, a tab, a duplicate
or unhashable key, an alias bomb, a file over the size limit) changes nothing
and says where; loads run off the event loop, and the monitor keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest

from sailplane.cli import build_parser, main
from sailplane.config import interpret
from sailplane.config.assemble import ACTIVE, IGNORED, REJECTED, RETAINED
from sailplane.config.incremental import DocumentCache
from sailplane.config.loader import LoadResult, load_dir, load_texts, object_changes
from sailplane.model.source import Severity
from sailplane.server.plane import ControlPlane, ServeOptions
from tests.support.procs import http_get
from tests.support.registry import BACKEND_V1_V2

REGISTRY = BACKEND_V1_V2

RULE = """\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: backend
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec: {}
"""

# 454 bytes that expand to 9^9 nodes; and the classic "billion laughs".
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
LAUGHS = 'lol1: &lol1 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"lol{i}: &lol{i} [{','.join([f'*lol{i - 1}'] * 10)}]\n" for i in range(2, 10)
)


def load(files: dict[str, str], previous: LoadResult | None = None, **kw: object) -> LoadResult:
    in_force = previous.in_force() if previous is not None else None
    return load_texts(sorted(files.items()), previous=in_force, **kw)  # type: ignore[arg-type]


def states(result: LoadResult) -> dict[str, str]:
    return {f"{o.kind}/{o.name}": o.state for o in result.objects}


def lines(result: LoadResult) -> list[str]:
    return [d.format() for d in result.diagnostics]


@pytest.fixture
def good() -> LoadResult:
    result = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "policy.yaml": POLICY})
    assert result.mesh is not None and not result.errors
    return result


ENVELOPE_TYPOS = {
    "apiVersion": (
        RULE.replace("v1alpha3", "v1alpha4"),
        "rule.yaml:1:13: IST0106: DestinationRule default/backend: apiVersion: unknown version "
        "'v1alpha4' of networking.istio.io (did you mean 'networking.istio.io/v1alpha3'?); "
        "it has v1, v1beta1, v1alpha3",
    ),
    "api-group": (
        RULE.replace("networking.istio.io", "networking.istio.oi"),
        "rule.yaml:1:13: IST0106: DestinationRule default/backend: apiVersion: unknown API "
        "group 'networking.istio.oi' (did you mean 'networking.istio.io/v1'?)",
    ),
    "no-version": (
        RULE.replace("/v1alpha3", ""),
        "rule.yaml:1:13: IST0106: DestinationRule default/backend: apiVersion: apiVersion "
        "'networking.istio.io' has no version (did you mean 'networking.istio.io/v1'?)",
    ),
    "kind": (
        RULE.replace("kind: DestinationRule", "kind: DestinatonRule"),
        "rule.yaml:2:7: IST0106: DestinatonRule default/backend: kind: unknown kind "
        "'DestinatonRule' in networking.istio.io (did you mean 'DestinationRule'?)",
    ),
    "kind-of-another-group": (
        RULE.replace("networking.istio.io", "security.istio.io").replace("v1alpha3", "v1"),
        "rule.yaml:1:13: IST0106: DestinationRule default/backend: apiVersion: DestinationRule "
        "is not in security.istio.io (did you mean apiVersion networking.istio.io/v1?)",
    ),
    "kind-typo-in-another-group": (
        RULE.replace("networking.istio.io/v1alpha3", "apps/v1").replace(
            "DestinationRule", "DestinationRul"
        ),
        "rule.yaml:2:7: IST0106: DestinationRul default/backend: kind: unknown kind "
        "'DestinationRul' (did you mean 'DestinationRule', apiVersion networking.istio.io/v1?)",
    ),
}


@pytest.mark.parametrize("text,expected", ENVELOPE_TYPOS.values(), ids=ENVELOPE_TYPOS.keys())
@pytest.mark.parametrize("cached", [False, True], ids=["cold", "cached"])
def test_an_envelope_typo_is_an_error_and_keeps_the_object(
    good: LoadResult, text: str, expected: str, cached: bool
) -> None:
    cache = DocumentCache() if cached else None
    if cache is not None:  # the typo arrives a few lines down, as a moved piece would
        load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "policy.yaml": POLICY}, cache=cache)
    typo = load(
        {"registry.yaml": REGISTRY, "rule.yaml": text, "policy.yaml": POLICY}, good, cache=cache
    )
    assert typo.mesh is not None
    assert [d.format() for d in typo.errors] == [expected]
    assert [r.name for r in typo.mesh.destination_rules] == ["backend"]
    assert typo.mesh.destination_rules == good.mesh.destination_rules  # type: ignore[union-attr]
    assert states(typo)["DestinationRule/backend"] == RETAINED
    assert object_changes(good.in_force(), typo) == []
    # Fixed (with a change): applied.
    fixed = load(
        {
            "registry.yaml": REGISTRY,
            "rule.yaml": RULE.replace("{name: v2, labels: {version: v2}}", "{name: v2b}"),
            "policy.yaml": POLICY,
        },
        typo,
    )
    assert fixed.mesh is not None and not fixed.errors
    assert [s.name for s in fixed.mesh.destination_rules[0].subsets] == ["v1", "v2b"]
    assert states(fixed)["DestinationRule/backend"] == ACTIVE


def test_a_new_object_with_an_envelope_typo_is_not_used(good: LoadResult) -> None:
    text = RULE.replace("DestinationRule", "DestinatonRule").replace("backend", "other")
    result = load({"registry.yaml": REGISTRY, "new.yaml": text}, None)
    assert result.mesh is not None and result.mesh.destination_rules == ()
    assert states(result)["DestinationRule/other"] == REJECTED


UNIDENTIFIED = {
    "no-name": (RULE.replace("  name: backend\n", "  labels: {a: b}\n"), "rule.yaml:4:3"),
    "unknown-kind": (RULE.replace("kind: DestinationRule", "kind: Frobnicator"), "rule.yaml:2:7"),
    "not-a-mapping": ("- just\n- a list\n", "rule.yaml:1:1"),
    "no-kind": (RULE.replace("kind: DestinationRule\n", ""), "rule.yaml:1:1"),
}


@pytest.mark.parametrize("text,where", UNIDENTIFIED.values(), ids=UNIDENTIFIED.keys())
def test_a_document_that_does_not_say_what_it_is_deletes_nothing(
    good: LoadResult, text: str, where: str
) -> None:
    """Which object it was cannot be told: nothing the load misses is deleted."""
    broken = load({"registry.yaml": REGISTRY, "rule.yaml": text}, good)  # policy.yaml removed too
    assert broken.mesh is not None
    assert broken.errors[0].format().startswith(where)
    assert states(broken)["DestinationRule/backend"] == RETAINED
    assert states(broken)["AuthorizationPolicy/deny-all"] == RETAINED
    assert len(broken.mesh.destination_rules) == len(broken.mesh.authorization_policies) == 1
    assert object_changes(good.in_force(), broken) == []
    held = [d for d in broken.diagnostics if "not found in the directory" in d.message]
    assert {d.obj for d in held} == {
        "DestinationRule default/backend",
        "AuthorizationPolicy default/deny-all",
    }
    assert all(d.severity is Severity.WARNING for d in held)
    # configz shows where it is held from.
    record = next(o for o in broken.objects if o.name == "backend" and o.kind == "DestinationRule")
    assert record.to_json()["held_by"] == where.rsplit(":", 1)[0]
    # Still held on the next load; once every document loads, what is gone is deleted.
    again = load({"registry.yaml": REGISTRY, "rule.yaml": text}, broken)
    assert states(again)["DestinationRule/backend"] == RETAINED
    fixed = load({"registry.yaml": REGISTRY, "rule.yaml": RULE}, again)
    assert states(fixed)["DestinationRule/backend"] == ACTIVE
    assert object_changes(again.in_force(), fixed) == [
        ("AuthorizationPolicy", "delete", "default/deny-all")
    ]


def test_a_fail_closed_policy_stays_while_a_document_is_unidentified() -> None:
    bad_policy = POLICY.replace("spec: {}", "spec: {action: DENNY}")
    first = load({"registry.yaml": REGISTRY, "policy.yaml": bad_policy})
    assert first.mesh is not None
    assert [p.fail_closed for p in first.mesh.authorization_policies] == [True]
    broken = load({"registry.yaml": REGISTRY, "policy.yaml": "kind: [\n"}, first)
    assert broken.mesh is None  # does not parse: nothing changes
    unnamed = load({"registry.yaml": REGISTRY, "policy.yaml": "kind: Nothing\n"}, first)
    assert unnamed.mesh is not None
    assert [p.fail_closed for p in unnamed.mesh.authorization_policies] == [True]


def test_kinds_of_other_groups_are_skipped_and_istio_kinds_not_translated_are_warned() -> None:
    others = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: patch}
"""
    result = load({"registry.yaml": REGISTRY, "others.yaml": others})
    assert not result.errors
    assert [d.severity for d in result.diagnostics] == [Severity.INFO] * 4 + [Severity.WARNING]
    assert states(result)["EnvoyFilter/patch"] == IGNORED


def test_core_group_typos_are_errors() -> None:
    servce = REGISTRY.replace("kind: Service\n", "kind: Servce\n", 1)
    result = load({"registry.yaml": servce})
    assert [d.format() for d in result.errors] == [
        "registry.yaml:2:7: IST0106: Servce default/backend: kind: unknown kind 'Servce' in "
        "the core API group (did you mean 'Service'?)"
    ]
    v2 = REGISTRY.replace("apiVersion: v1\n", "apiVersion: v2\n", 1)
    assert "did you mean 'v1'?" in load({"registry.yaml": v2}).errors[0].message


FILE_BREAKS = {
    "syntax": (
        RULE.replace("  host: backend", "   host: backend"),
        "rule.yaml:7:3: YAML syntax error: did not find expected key, while parsing a block "
        "mapping that starts at 1:1 (check the indentation of this line)",
    ),
    "tab": (
        RULE.replace("  host: backend", "\thost: backend"),
        "rule.yaml:6:1: YAML syntax error: found character that cannot start any token, while "
        "scanning for the next token that starts at 6:1 (a tab: YAML indents with spaces only)",
    ),
    "unhashable-key": (
        RULE + "? [a]\n: b\n",
        "rule.yaml:10:3: YAML error: a mapping key must be a string, not a list",
    ),
    "mapping-key": (
        RULE + "? {a: b}\n: b\n",
        "rule.yaml:10:3: YAML error: a mapping key must be a string, not a mapping",
    ),
    "duplicate-key": (
        RULE.replace("  host: backend\n", "  host: backend\n  host: frontend\n"),
        "rule.yaml:7:3: YAML error: duplicate key 'host', already set at 6:3 (which one is meant?)",
    ),
    "alias-bomb": (
        ALIAS_BOMB,
        "rule.yaml:1:16: YAML error: aliases expand to more than 200,000 nodes "
        "(an alias bomb?); the file is not used",
    ),
    "billion-laughs": (
        LAUGHS,
        "rule.yaml:1:26: YAML error: aliases expand to more than 200,000 nodes "
        "(an alias bomb?); the file is not used",
    ),
}


@pytest.mark.parametrize("text,expected", FILE_BREAKS.values(), ids=FILE_BREAKS.keys())
@pytest.mark.parametrize("cached", [False, True], ids=["cold", "cached"])
def test_a_file_that_does_not_parse_changes_nothing_and_says_where(
    good: LoadResult, text: str, expected: str, cached: bool
) -> None:
    cache = DocumentCache() if cached else None
    files = {"registry.yaml": REGISTRY, "rule.yaml": RULE, "policy.yaml": POLICY}
    if cache is not None:
        load(files, cache=cache)
    started = time.monotonic()
    broken = load({**files, "rule.yaml": text}, good, cache=cache)
    assert time.monotonic() - started < 5
    assert broken.mesh is None and broken.parse_failed
    assert lines(broken) == [expected]
    # `sailplane validate` reports it the same way, and checks the rest.
    thorough = load({**files, "rule.yaml": text}, keep_going=True, cache=cache)
    assert [d.format() for d in thorough.errors] == [expected]


def test_a_bomb_in_each_of_many_files_shares_one_budget() -> None:
    small = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(4)
    )  # 100,000 nodes each: under the budget alone
    files = {f"f{n}.yaml": small for n in range(4)}
    started = time.monotonic()
    result = load(files)
    assert time.monotonic() - started < 10
    assert result.mesh is None
    # The first file spends 111,110 nodes; the budget runs out in the second.
    assert [d.file for d in result.errors] == ["f1.yaml", "f2.yaml", "f3.yaml"]


def test_realistic_anchors_are_fine() -> None:
    anchors = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w1}\n"
        "spec: {address: 10.0.0.9, labels: &labels {app: backend, version: v1}}\n"
    )
    result = load({"registry.yaml": REGISTRY, "anchors.yaml": anchors})
    assert result.mesh is not None and not result.errors


def test_diagnostics_quote_only_an_excerpt_of_a_value() -> None:
    text = (
        "big: &big {" + ", ".join(f"k{n}: value-{n}" for n in range(20_000)) + "}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\n"
        "spec: {hosts: [backend], http: [{route: [{destination: {host: backend}}]}]}\n"
    ).replace("hosts: [backend]", "hosts: &h {a: [" + ", ".join(["x" * 50] * 2000) + "]}")
    result = load({"registry.yaml": REGISTRY, "vs.yaml": text})
    assert result.errors
    assert all(len(d.message) <= 300 for d in result.diagnostics)


def test_a_file_over_the_size_limit_is_not_read(tmp_path: Path, good: LoadResult) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "rule.yaml").write_text(RULE)
    first = load_dir(tmp_path)
    assert first.mesh is not None
    huge = RULE + "#" * 4096 + "\n"
    (tmp_path / "huge.yaml").write_text(huge)
    result = load_dir(tmp_path, previous=first.in_force(), max_file_size=4096)
    assert result.mesh is None
    assert lines(result) == [
        f"huge.yaml:1:1: the file is {len(huge):,} bytes, over the limit of 4,096 "
        "(--max-file-size); it is not read"
    ]
    # The same limit for texts (the monitor's dry run).
    texts = load({"huge.yaml": huge}, max_file_size=4096)
    assert texts.errors[0].message.startswith(f"the file is {len(huge):,} bytes")
    assert load_dir(tmp_path).mesh is not None  # 8 MiB by default


def test_a_reader_that_fails_is_a_diagnostic(
    good: LoadResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(reader: object, domain_suffix: str) -> object:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(interpret, "_parse", boom)
    result = load({"registry.yaml": REGISTRY, "rule.yaml": RULE, "policy.yaml": POLICY}, good)
    assert result.mesh is not None
    assert (
        "rule.yaml:1:1: DestinationRule default/backend: this version is rejected; the last "
        "good version (rule.yaml:1) stays in force until it is fixed"
    ) in [d.format().replace("warning: ", "") for d in result.diagnostics]
    assert any(
        "cannot read this document: TypeError: unhashable type: 'list'" in line
        for line in lines(result)
    )


def test_the_size_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--max-file-size", "512K"]).max_file_size == 512 * 1024
    assert parser.parse_args(["serve"]).max_file_size == 8 * 1024 * 1024
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max-file-size", "lots"])
    (tmp_path / "rule.yaml").write_text(REGISTRY)
    assert main(["validate", "--config-dir", str(tmp_path), "--max-file-size", "100"]) == 1
    out, _ = capsys.readouterr()
    assert "rule.yaml:1:1: the file is" in out and "over the limit of 100" in out


# -- the running control plane -------------------------------------------------


async def test_startup_on_a_directory_that_does_not_load_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY + "? [a]\n: b\n")
    plane = ControlPlane(
        ServeOptions(
            tmp_path,
            xds_address=("127.0.0.1", 0),
            monitor_address=("127.0.0.1", 0),
            debounce_quiet=0.05,
        )
    )
    await plane.start()
    try:
        messages = [r.getMessage() for r in caplog.records]
        assert any("there is no last good one: nothing is served" in m for m in messages)
        assert not any("still serving the last good one" in m for m in messages)
        assert any(m.startswith("registry.yaml:17:3: YAML error: a mapping key") for m in messages)
        url = f"http://127.0.0.1:{plane.monitor_port}"
        status, _ = await asyncio.to_thread(http_get, url + "/ready")
        assert status == 503
        _, body = await asyncio.to_thread(http_get, url + "/debug/configz")
        assert json.loads(body)["last_load_applied"] is False
        (tmp_path / "registry.yaml").write_text(REGISTRY)
        deadline = time.monotonic() + 5
        while plane.controller.mesh is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        _, body = await asyncio.to_thread(http_get, url + "/debug/configz")
        assert json.loads(body)["last_load_applied"] is True
    finally:
        await plane.stop()


async def test_a_reload_that_fails_to_apply_is_reported_truthfully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    plane = ControlPlane(
        ServeOptions(tmp_path, xds_address=None, monitor_address=("127.0.0.1", 0), watch=False)
    )
    await plane.start()
    try:
        assert plane.reloader.last_load_applied
        (tmp_path / "rule.yaml").write_text(RULE)

        def broken(mesh: object) -> int:
            raise RuntimeError("translation bug")

        monkeypatch.setattr(plane.controller, "apply", broken)
        assert not await plane.reload_off_loop()
        assert not plane.reloader.last_load_applied
        assert plane.reloader.last_result is not None
        assert plane.reloader.last_result.diagnostics[-1].message == (
            "applying failed: RuntimeError: translation bug"
        )
    finally:
        await plane.stop()


async def test_loads_and_dry_runs_leave_the_loop_free(tmp_path: Path) -> None:
    """A slow load (many alias bombs, under the size limit) runs in a thread:
    the monitor answers meanwhile, and so does a dry run of the same."""
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    plane = ControlPlane(
        ServeOptions(tmp_path, xds_address=None, monitor_address=("127.0.0.1", 0), watch=False)
    )
    await plane.start()
    try:
        for n in range(3):
            (tmp_path / f"bomb{n}.yaml").write_text(LAUGHS)
        url = f"http://127.0.0.1:{plane.monitor_port}"
        body = json.dumps({"files": {"a.yaml": LAUGHS, "b.yaml": ALIAS_BOMB}}).encode()

        def diff() -> dict[str, object]:
            request = urllib.request.Request(url + "/debug/diff", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]

        reload = asyncio.create_task(plane.reload_off_loop())
        dry = asyncio.create_task(asyncio.to_thread(diff))
        worst = 0.0
        while not (reload.done() and dry.done()):
            started = time.monotonic()
            status, _ = await asyncio.to_thread(http_get, url + "/ready")
            assert status == 200
            worst = max(worst, time.monotonic() - started)
        assert not reload.result()
        answer = dry.result()
        assert answer["verdict"] == "rejected"
        assert worst < 2.0, worst
    finally:
        await plane.stop()


BROKEN_DOCUMENTS = Path(__file__).parents[1] / "data" / "broken-documents"


def test_broken_documents_give_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    """tests/data/broken-documents: one broken document or file each, and the
    exact output (regenerate with ``sailplane validate -v --config-dir
    tests/data/broken-documents > tests/data/broken-documents/expected.txt``)."""
    code = main(["validate", "-v", "--config-dir", str(BROKEN_DOCUMENTS)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == (BROKEN_DOCUMENTS / "expected.txt").read_text()
    assert "invalid: 7 errors, 0 warnings in 8 files" in err
    files = sorted(p.name for p in BROKEN_DOCUMENTS.glob("*.yaml"))
    assert sorted({line.split(":", 1)[0] for line in out.splitlines()}) == files
