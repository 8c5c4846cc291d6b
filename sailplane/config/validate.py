"""Offline validation: the checks ``sailplane serve`` runs, as a report.

Used by ``sailplane validate`` (pre-commit hooks, CI). Every file that parses
is checked even when another does not, and a VirtualService rejected for one
mistake is still checked against the rest of the mesh (its hosts, subsets,
gateways), so one run shows every problem of every object. A directory with
no mesh object at all is an error too: a typo in ``--config-dir`` must not
pass CI.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sailplane.config.assemble import REJECTED, build_mesh
from sailplane.config.envelope import reader_for
from sailplane.config.hostnames import host_context, read_virtual_service
from sailplane.config.loader import LoadResult, config_files, display_name, load_dir, load_texts
from sailplane.config.references import check_virtual_service
from sailplane.config.virtualservice import parse_virtual_service
from sailplane.config.yamldoc import Document, parse_documents
from sailplane.errors import SailplaneError
from sailplane.model.hosts import DEFAULT_DOMAIN_SUFFIX
from sailplane.model.source import Diagnostic, Severity

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class Report:
    result: LoadResult
    strict: bool = False
    verbose: bool = False

    @property
    def shown(self) -> tuple[Diagnostic, ...]:
        """Errors and warnings; info lines (skipped kinds) only when verbose."""
        return tuple(
            d for d in self.result.diagnostics if self.verbose or d.severity is not Severity.INFO
        )

    @property
    def empty(self) -> bool:
        """No mesh object at all (no files, or only other kinds)."""
        return not any(o.state != "ignored" for o in self.result.objects)

    @property
    def valid(self) -> bool:
        if self.result.errors or self.empty:
            return False
        return not (self.strict and self.result.warnings)

    @property
    def exit_code(self) -> int:
        return EXIT_VALID if self.valid else EXIT_INVALID

    def summary(self) -> str:
        files = f"{self.result.files} file{'s' * (self.result.files != 1)}"
        if self.empty and not self.result.errors:
            if not self.result.files:
                return "invalid: no .yaml or .yml files (is --config-dir right?)"
            return (
                f"invalid: no mesh objects in {files} (Istio kinds, Service, "
                "WorkloadEntry, the istio ConfigMap; is --config-dir right?)"
            )
        errors, warnings = len(self.result.errors), len(self.result.warnings)
        objects = sum(1 for o in self.result.objects if o.state == "active")
        verdict = "valid" if self.valid else "invalid"
        return (
            f"{verdict}: {errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)} in {self.result.files} "
            f"file{'s' * (self.result.files != 1)} ({objects} objects usable)"
        )

    def text(self) -> str:
        return "".join(f"{d.format()}\n" for d in self.shown)

    def json(self) -> str:
        return json.dumps(
            {
                "valid": self.valid,
                "empty": self.empty,
                "files": self.result.files,
                "errors": len(self.result.errors),
                "warnings": len(self.result.warnings),
                "diagnostics": [d.to_json() for d in self.shown],
                "objects": [o.to_json() for o in self.result.objects],
            },
            indent=2,
        )


def validate_dir(
    root: Path,
    strict: bool = False,
    verbose: bool = False,
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
) -> Report:
    result = load_dir(root, domain_suffix, keep_going=True)
    more = rejected_references(root, result, domain_suffix)
    return _report(result, more, strict, verbose)


def validate_texts(
    texts: Sequence[tuple[str, str]],
    unread: Sequence[Diagnostic] = (),
    strict: bool = False,
    verbose: bool = False,
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
) -> Report:
    """:func:`validate_dir` of ``(name, text)`` pairs (a configuration store's
    objects); ``unread`` are the store's entries that could not be read."""
    result = load_texts(texts, domain_suffix, keep_going=True, unread=unread)
    more = _rejected_references_in(texts, result, domain_suffix)
    return _report(result, more, strict, verbose)


def _report(result: LoadResult, more: Sequence[Diagnostic], strict: bool, verbose: bool) -> Report:
    """The report of ``result`` with the reference checks' ``more`` problems."""
    if more:
        diagnostics = sorted(
            (*result.diagnostics, *more),
            key=lambda d: (d.file, d.position.line, d.position.column),
        )
        result = dataclasses.replace(result, diagnostics=tuple(diagnostics))
    return Report(result, strict, verbose)


def rejected_references(
    root: Path, result: LoadResult, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
) -> list[Diagnostic]:
    """What the cross-object checks say about VirtualServices rejected before
    they got there (a weight sum that is wrong hid an unknown host until the
    weights were fixed). Read again, leniently, and checked against the mesh
    the directory would make; only problems not already reported."""
    rejected = {
        (o.namespace, o.name)
        for o in result.objects
        if o.kind == "VirtualService" and o.state == REJECTED
    }
    if not rejected:
        return []
    # Only files the load read and found objects in: within the size limit,
    # valid YAML (a file that is neither is reported already).
    read = {o.file for o in result.objects}
    texts: list[tuple[str, str]] = []
    for path in config_files(root):
        name = display_name(path, root)
        if name not in read:
            continue
        try:
            texts.append((name, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue  # changed since the load; what it says now is for the next run
    return _rejected_references_in(texts, result, domain_suffix)


def _rejected_references_in(
    texts: Sequence[tuple[str, str]], result: LoadResult, domain_suffix: str
) -> list[Diagnostic]:
    rejected = {
        (o.namespace, o.name)
        for o in result.objects
        if o.kind == "VirtualService" and o.state == REJECTED
    }
    if not rejected:
        return []
    read = {o.file for o in result.objects}
    documents: list[Document] = []
    for name, text in texts:
        if name not in read:
            continue
        try:
            documents.extend(parse_documents(text, name))
        except SailplaneError:
            continue
    mesh = result.mesh or build_mesh(documents, domain_suffix)[0]
    known = set(result.diagnostics)
    context = host_context(mesh)
    found: list[Diagnostic] = []
    for doc in documents:
        reader = reader_for(doc, [])
        if reader is None or reader.kind != "VirtualService":
            continue
        key = (reader.namespace, reader.name)
        if key not in rejected:
            continue
        rejected.discard(key)  # the first definition; a duplicate is not read
        vs = parse_virtual_service(reader, domain_suffix, partial=True)
        if vs is None:
            continue
        vs, _ = read_virtual_service(vs, context)  # its notes were reported
        found += [d for d in check_virtual_service(mesh, vs) if d not in known]
    return found
