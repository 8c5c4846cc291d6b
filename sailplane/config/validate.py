"""Offline validation: the checks ``sailplane serve`` runs, as a report.

Used by ``sailplane validate`` (pre-commit hooks, CI). Every file that parses
is checked even when another does not, so one run shows every problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sailplane.config.loader import LoadResult, load_dir
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
    def valid(self) -> bool:
        if self.result.errors:
            return False
        return not (self.strict and self.result.warnings)

    @property
    def exit_code(self) -> int:
        return EXIT_VALID if self.valid else EXIT_INVALID

    def summary(self) -> str:
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
    return Report(load_dir(root, domain_suffix, keep_going=True), strict, verbose)
