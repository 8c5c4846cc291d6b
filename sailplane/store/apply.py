"""``sailplane apply``: validate files against the store, then write the
valid objects in one transaction.

The objects of the files are laid over the store's (with ``prune``, they
replace the store's entirely) and the result is validated exactly as
``sailplane validate`` validates a directory, so a reference from an applied
object to one already in the store resolves, and one to an object that is
rejected does not. Only objects without errors are written; all of them in
ONE etcd transaction that also checks no key it touches changed since it was
read, so a replica never sees half an apply and two applies never interleave.

Kubernetes Secrets are refused: their private keys would sit in etcd in the
clear (and in every backup of it). They stay files given to each replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from sailplane.config.loader import read_files
from sailplane.config.validate import Report, validate_texts
from sailplane.errors import YamlSyntaxError
from sailplane.model.source import Diagnostic, Position, Severity
from sailplane.store.etcdstore import EtcdStore, Listing
from sailplane.store.objects import StoredObject, load_texts_of, objects_in_file

REFUSED_KINDS = {
    "Secret": "a Secret holds a private key, which is not stored in etcd in the clear; "
    "keep it a file given to each replica",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What apply does with one object of the files."""

    obj: StoredObject
    action: str  # created | configured | unchanged | rejected | refused | skipped
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclass
class Plan:
    outcomes: list[Outcome] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # KIND/NS/NAME deleted
    problems: list[Diagnostic] = field(default_factory=list)  # files that do not load
    puts: list[StoredObject] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)  # path -> mod_revision read
    report: Report | None = None

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(
            o.action in ("rejected", "refused") for o in self.outcomes
        )

    @property
    def writes(self) -> bool:
        return bool(self.puts or self.pruned)


def _read_objects(source: Path, limit: int, plan: Plan) -> list[StoredObject]:
    texts, unread = read_files(source, limit)
    plan.problems.extend(unread)
    found: dict[str, StoredObject] = {}
    for name, text in texts:
        try:
            objects, problems = objects_in_file(text, name)
        except YamlSyntaxError as exc:
            plan.problems.append(cast(Diagnostic, exc.diagnostic))
            continue
        plan.problems.extend(problems)
        for obj in objects:
            if (size := len(obj.encode())) > limit:
                message = f"{obj.label()} is {size:,} bytes stored, over the limit of {limit:,}"
                plan.problems.append(Diagnostic(name, Position(obj.line, 1), message))
                continue
            first = found.get(obj.path)
            if first is not None:
                plan.problems.append(
                    Diagnostic(
                        name,
                        Position(obj.line, 1),
                        f"{obj.label()} is defined twice (first at {first.origin}:{first.line})",
                    )
                )
                continue
            found[obj.path] = obj
    return list(found.values())


def plan_apply(store: EtcdStore, source: Path, prune: bool = False) -> Plan:
    """What applying ``source`` (a file or a directory) would write."""
    plan = Plan()
    applied = _read_objects(source, store.max_value_size, plan)
    listing: Listing = store.list()
    current = listing.objects
    overlay = {} if prune else {path: obj for path, (obj, _) in current.items()}
    for obj in applied:
        if obj.kind not in REFUSED_KINDS:
            overlay[obj.path] = obj
    if len(overlay) > store.max_keys:
        plan.problems.append(
            Diagnostic(str(source), Position(1, 1), f"over {store.max_keys:,} objects")
        )
    texts = load_texts_of(o for _, o in sorted(overlay.items()))
    report = validate_texts(texts, listing.problems)
    plan.report = report
    states = {r.file: r.state for r in report.result.objects}
    for obj in sorted(applied, key=lambda o: o.path):
        refused = REFUSED_KINDS.get(obj.kind)
        if refused is not None:
            problem = Diagnostic(obj.origin, Position(obj.line, 1), refused, obj=obj.label())
            plan.outcomes.append(Outcome(obj, "refused", (problem,)))
            continue
        mine = tuple(d for d in report.result.diagnostics if d.file == obj.display_name)
        errors = [d for d in mine if d.severity is Severity.ERROR]
        state = states.get(obj.display_name)
        if errors or state == "rejected":
            plan.outcomes.append(Outcome(obj, "rejected", mine))
            continue
        if state in (None, "ignored"):
            plan.outcomes.append(Outcome(obj, "skipped", mine))
            continue
        old = current.get(obj.path)
        if old is None:
            action = "created"
        elif old[0].text != obj.text:
            action = "configured"
        else:
            action = "unchanged"
        if old is None or old[0].encode() != obj.encode():
            plan.puts.append(obj)
            plan.expected[obj.path] = old[1] if old else 0
        plan.outcomes.append(Outcome(obj, action, mine))
    if prune and not plan.problems:  # never prune from a directory that did not read
        names = {o.path for o in applied}
        for path, (_, revision) in sorted(current.items()):
            if path not in names:
                plan.pruned.append(path)
                plan.expected[path] = revision
    return plan


def commit(store: EtcdStore, plan: Plan) -> int:
    """Write the plan in one transaction; the store's new revision."""
    return store.commit(plan.puts, plan.pruned, plan.expected)


def matches_kind(asked: str, kind: str) -> bool:
    """``virtualservice``, ``VirtualServices``, ``VirtualService`` all name VirtualService."""
    asked = asked.lower()
    return asked in (kind.lower(), kind.lower() + "s")


def diagnostic_in_file(d: Diagnostic, obj: StoredObject) -> str:
    """A diagnostic of a stored object's load, named by the file it came from."""
    return d.format().replace(obj.display_name, obj.origin or obj.display_name, 1)
