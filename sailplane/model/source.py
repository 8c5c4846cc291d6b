"""Where things came from: source locations and diagnostics.

Every object of the model remembers the file and position it was read from,
and every field of it can be located, so that a diagnostic reads
``mesh/vs.yaml:12:5: VirtualService default/weather: spec.http[0]...: message``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

FieldPath = tuple[str | int, ...]


def format_field_path(path: FieldPath) -> str:
    """``("spec", "http", 0, "route")`` -> ``spec.http[0].route``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Source:
    """One YAML document: its file, the document's position, and the position of
    every node in it, keyed by field path (so errors can point at a field)."""

    file: str
    position: Position
    positions: Mapping[FieldPath, Position] = field(default_factory=dict, compare=False, repr=False)

    def locate(self, path: FieldPath) -> Position:
        """The position of the node at ``path``, or of its closest located parent."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return found
        return self.position


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in the configuration.

    ``obj`` is ``"Kind namespace/name"`` when the problem belongs to an object.
    ``code`` is the matching ``istioctl analyze`` code (``IST0101``) if any.
    """

    file: str
    position: Position
    message: str
    obj: str = ""
    field_path: str = ""
    severity: Severity = Severity.ERROR
    code: str = ""

    def format(self) -> str:
        parts = [f"{self.file}:{self.position.line}:{self.position.column}:"]
        if self.severity is not Severity.ERROR:
            parts.append(f"{self.severity.value}:")
        if self.code:
            parts.append(f"{self.code}:")
        if self.obj:
            parts.append(f"{self.obj}:")
        if self.field_path:
            parts.append(f"{self.field_path}:")
        parts.append(self.message)
        return " ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.position.line,
            "column": self.position.column,
            "severity": self.severity.value,
            "code": self.code or None,
            "object": self.obj or None,
            "field": self.field_path or None,
            "message": self.message,
        }
