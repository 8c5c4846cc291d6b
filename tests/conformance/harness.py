"""The conformance harness: every file of the Istio corpus, loaded the way
its page applies it, each Istio object's actual verdict against the one
corpus.yaml expects, and every proxy's configuration for Envoy's check.

Used by test_conformance.py and by ``python -m tests.conformance.report``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sailplane.ca import CertificateAuthority, IdentityStore
from sailplane.config.validate import validate_dir
from sailplane.model.source import Diagnostic, Severity
from sailplane.server.controller import CHECK_SNAPSHOTS
from sailplane.server.envoystatic import StaticConfig, static_config
from sailplane.server.selfcheck import inconsistent_snapshots, proxy_snapshots
from sailplane.xds import Snapshot
from tests.conformance.spotcheck import Check, holds, resources

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
# The corpus (../shared/corpus/istio, Apache-2.0, Copyright Istio Authors),
# vendored so that every checkout and CI runs it; test_conformance checks
# that the copy equals the team's shared one wherever that one is present.
CORPUS = ROOT / "tests" / "data" / "istio-corpus"
SHARED_CORPUS = ROOT.parent / "shared" / "corpus" / "istio"
EXPECTATIONS = HERE / "corpus.yaml"

FAITHFUL, REPORTED, WRONG = "faithful", "reported", "wrong"
_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.M)


@dataclass(frozen=True, slots=True)
class Expectation:
    obj: str  # "Kind namespace/name"
    expect: str  # FAITHFUL or REPORTED
    fragment: str = ""  # what the report must contain
    why: str = ""
    checks: tuple[Check, ...] = ()
    # Warnings that accompany a faithful translation because Istio gives them
    # too (deprecated fields, istioctl analyze findings): each must be said.
    notices: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.obj.split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class FileCase:
    group: str
    file: str
    base: tuple[str, ...]
    before: tuple[str, ...] = ()
    secrets: tuple[Mapping[str, str], ...] = ()
    objects: tuple[Expectation, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.group}/{self.file}"

    @property
    def applied(self) -> tuple[str, ...]:
        """What the page applies, in order, ending with the file itself."""
        first = [f for f in (*self.base, *self.before) if f != self.file]
        return (*dict.fromkeys(first), self.file)


@dataclass(frozen=True, slots=True)
class Verdict:
    case: str  # group/file
    obj: str
    expected: str
    actual: str
    detail: str = ""  # why wrong, or the report's text

    @property
    def ok(self) -> bool:
        return self.actual == self.expected

    @property
    def kind(self) -> str:
        return self.obj.split(" ", 1)[0]

    @property
    def group(self) -> str:
        return self.case.split("/", 1)[0]


@dataclass(slots=True)
class FileResult:
    case: FileCase
    verdicts: list[Verdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the expectations or the file, not objects
    configs: list[StaticConfig] = field(default_factory=list)


def load_cases(path: Path = EXPECTATIONS) -> list[FileCase]:
    data = yaml.safe_load(path.read_text())
    cases = []
    for group, spec in data["groups"].items():
        base = tuple(spec["base"])
        for name, entry in spec["files"].items():
            entry = entry or {}
            objects = tuple(
                _expectation(obj, value, f"{group}/{name}")
                for obj, value in (entry.get("objects") or {}).items()
            )
            cases.append(
                FileCase(
                    group,
                    name,
                    base,
                    tuple(entry.get("before", ())),
                    tuple(entry.get("secrets", ())),
                    objects,
                )
            )
    return cases


def _expectation(obj: str, value: Any, where: str) -> Expectation:
    if value == FAITHFUL:
        return Expectation(obj, FAITHFUL)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {obj}: expected faithful or a mapping, not {value!r}")
    checks = tuple(Check.of(c, f"{where}: {obj}") for c in value.get("checks", ()))
    if "reported" in value:
        return Expectation(obj, REPORTED, str(value["reported"]), value.get("why", ""), checks)
    if value.get("expect") != FAITHFUL:
        raise ValueError(f"{where}: {obj}: expect faithful or reported: FRAGMENT")
    notices = tuple(str(n) for n in value.get("notices", ()))
    if notices and not value.get("why"):
        raise ValueError(f"{where}: {obj}: notices need a why (where Istio says the same)")
    return Expectation(obj, FAITHFUL, "", value.get("why", ""), checks, notices)


# -- the files ----------------------------------------------------------------


def _load(document: str) -> Any:
    try:
        return yaml.load(document, Loader=_LOADER)
    except yaml.YAMLError:
        return None


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _parsed(path: Path) -> tuple[str, tuple[tuple[str, tuple[str, str, str] | None, Any], ...]]:
    """A corpus file's text and its documents: (text, key, data) each."""
    text = path.read_text()
    documents = []
    for document in _DOCUMENT_SEPARATOR.split(text):
        data = _load(document)
        key = None
        if isinstance(data, dict) and "kind" in data:
            meta = data.get("metadata") or {}
            namespace = str(meta.get("namespace") or "default")
            key = (str(data["kind"]), namespace, str(meta.get("name")))
        documents.append((document, key, data))
    return text, tuple(documents)


def istio_objects(path: Path) -> list[str]:
    """The Istio objects of a corpus file, as ``Kind namespace/name``."""
    return [
        f"{key[0]} {key[1]}/{key[2]}"
        for _, key, data in _parsed(path)[1]
        if key is not None and "istio.io" in str(data.get("apiVersion", ""))
    ]


def assemble(case: FileCase, corpus: Path, dest: Path) -> None:
    """The page's files in ``dest``, as ``kubectl apply`` one after the other
    leaves them: a later definition of an object replaces an earlier one."""
    later: set[tuple[str, str, str]] = set()
    for name in reversed(case.applied):
        text, documents = _parsed(corpus / case.group / name)
        kept = [d for d, key, _ in documents if key is None or key not in later]
        later |= {key for _, key, _ in documents if key is not None}
        (dest / name).write_text(text if len(kept) == len(documents) else "---".join(kept))
    if case.secrets:
        (dest / "00-secrets.yaml").write_text("---\n".join(_secret_yaml(s) for s in case.secrets))


def _secret_yaml(spec: Mapping[str, str]) -> str:
    cert, key, ca = _material(spec["namespace"], spec["name"])
    data = {"tls.crt": cert, "tls.key": key}
    if spec.get("kind") == "mutual":
        data["ca.crt"] = ca
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": spec["name"], "namespace": spec["namespace"]},
            "type": "kubernetes.io/tls",
            "data": encoded,
        }
    )


@cache
def _authority() -> CertificateAuthority:
    return CertificateAuthority.create_self_signed()


@cache
def _material(namespace: str, name: str) -> tuple[bytes, bytes, bytes]:
    issued = _authority().issue_workload(namespace, name)
    return issued.cert_chain_pem, issued.private_key_pem, issued.trust_bundle_pem


@cache
def shared_identities() -> IdentityStore:
    """One CA for every file's proxies: a proxy's secrets are the same from
    one file to the next, so identical configurations are validated once."""
    return IdentityStore(_authority())


# -- verdicts -----------------------------------------------------------------


def evaluate(case: FileCase, corpus: Path, workdir: Path) -> FileResult:
    """Load the file as its page applies it, and judge each of its objects."""
    workdir.mkdir(parents=True)
    assemble(case, corpus, workdir)
    result = FileResult(case)
    report = validate_dir(workdir)
    present = istio_objects(corpus / case.group / case.file)
    expected = {e.obj: e for e in case.objects}
    result.problems += [
        f"{o}: in the file, not in corpus.yaml" for o in present if o not in expected
    ]
    result.problems += [
        f"{o}: in corpus.yaml, not in the file" for o in expected if o not in present
    ]

    mine = [
        d
        for d in report.result.diagnostics
        if d.file == case.file and d.severity is not Severity.INFO
    ]
    unattributed = [d for d in mine if d.obj not in present]
    if not present:
        result.problems += [f"{d.format()}" for d in unattributed]
    records = {f"{r.kind} {r.namespace}/{r.name}": r for r in report.result.objects}

    snapshots: dict[str, Snapshot] = {}
    mesh = report.result.mesh
    if mesh is not None:
        with _snapshot_checks_reported():
            built = list(proxy_snapshots(mesh, shared_identities()))
        snapshots = {w.id: s for w, s in built}
        result.configs = [static_config(w, s) for w, s in built]
        result.problems += [
            f"proxy {proxy}: inconsistent snapshot: {'; '.join(problems)}"
            for proxy, problems in inconsistent_snapshots(mesh, built)
        ]
    for obj in present:
        expectation = expected.get(obj)
        if expectation is not None:
            diagnostics = [d for d in mine if d.obj == obj] + unattributed
            record = records.get(obj)
            state = record.state if record is not None else "missing"
            result.verdicts.append(_verdict(case, expectation, diagnostics, state, snapshots))
    return result


@contextlib.contextmanager
def _snapshot_checks_reported() -> Iterator[None]:
    """Under the tests the controller asserts each snapshot's consistency
    (conftest.py); here an inconsistency is one of the file's problems."""
    saved = os.environ.pop(CHECK_SNAPSHOTS, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[CHECK_SNAPSHOTS] = saved


def _verdict(
    case: FileCase,
    expectation: Expectation,
    diagnostics: list[Diagnostic],
    state: str,
    snapshots: Mapping[str, Snapshot],
) -> Verdict:
    said = [_said(d) for d in diagnostics]
    if state != "active" and not said:
        said = [f"state {state} without a diagnostic"]
    verdict = functools.partial(Verdict, case.id, expectation.obj, expectation.expect)
    if expectation.expect == REPORTED:
        if not said:
            return verdict(
                WRONG, f"accepted silently; expected a report with {expectation.fragment!r}"
            )
        if not any(expectation.fragment in s for s in said):
            return verdict(WRONG, f"reported without {expectation.fragment!r}: " + " | ".join(said))
        return verdict(REPORTED, " | ".join(said))
    missing = [n for n in expectation.notices if not any(n in s for s in said)]
    if missing:
        return verdict(WRONG, f"expected notices {missing!r} not said: " + " | ".join(said))
    excused = [
        s for s in said if s.startswith("warning ") and any(n in s for n in expectation.notices)
    ]
    unexcused = [s for s in said if s not in excused]
    if state != "active" or unexcused:
        return verdict(WRONG, "reported where faithful expected: " + " | ".join(said))
    failed = [c.describe() for c in expectation.checks if not _check(c, snapshots)]
    if failed:
        return verdict(WRONG, "spot check failed: " + "; ".join(failed))
    return verdict(FAITHFUL)


def _said(d: Diagnostic) -> str:
    code = f"{d.code} " if d.code else ""
    where = f"{d.field_path}: " if d.field_path else ""
    return f"{d.severity.value} {code}{where}{d.message}"


def _check(check: Check, snapshots: Mapping[str, Snapshot]) -> bool:
    snapshot = snapshots.get(check.proxy)
    return snapshot is not None and holds(check, resources(snapshot, check.type))


def evaluate_all(cases: Iterable[FileCase], corpus: Path, workdir: Path) -> list[FileResult]:
    return [evaluate(c, corpus, workdir / c.group / c.file) for c in cases]
