"""What became of each object of the directory: :class:`ObjectRecord`.

Its own module so that the per-document stage (interpret.py) and the
whole-directory stage (assemble.py) can both name it without importing
each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str, str]  # kind, namespace, name

ACTIVE = "active"  # this version is in force
RETAINED = "retained"  # this version is rejected; the last good one is in force
REJECTED = "rejected"  # has errors; not in force at all
IGNORED = "ignored"  # a kind sailplane does not translate yet


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """One object of the directory and what became of it."""

    kind: str
    namespace: str
    name: str
    file: str  # where the version in force came from (the rejected one if none is)
    line: int
    digest: str  # content hash of that version
    state: str = ACTIVE
    rejected_at: str = ""  # "file:line" of a rejected newer version
    # Retained because the object is missing from a directory that has a
    # document that does not say what it is (rejected_at names that document).
    held: bool = False
    # Every load looks records up by key thousands of times: build it once.
    key: Key = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.kind, self.namespace, self.name))

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "source": f"{self.file}:{self.line}",
            "state": self.state,
            "digest": self.digest[:12],
        }
        if self.rejected_at:
            out["held_by" if self.held else "rejected_version"] = self.rejected_at
        return out


def document_digest(data: Any) -> str:
    text = json.dumps(_canonical(data), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Keys as strings, at every depth (a module function: a nested
    recursive one is a reference cycle, left for the collector)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value
