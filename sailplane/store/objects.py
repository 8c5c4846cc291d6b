"""Mesh objects as etcd keys and values.

One object a key, ``PREFIX/KIND/NAMESPACE/NAME``; the value is JSON holding
the object's YAML document as it was written and where it came from::

    {"origin": "weather/vs.yaml", "line": 12, "yaml": "apiVersion: ...\\n"}

A load names each object ``etcd:KIND/NAMESPACE/NAME (from ORIGIN)`` and
puts its document at ``line`` (blank lines before it), so a diagnostic
reads ``etcd:VirtualService/default/reviews (from weather/vs.yaml):14:7:
VirtualService default/reviews: spec.http[0]...: ...``: the file and line
it was applied from, and the key it lives under.

A first key segment starting with ``_`` is reserved for sailplane's own
records (replicas, later) and is not configuration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import yaml

from sailplane.config.yamldoc import Document, parse_documents, split_documents
from sailplane.errors import SailplaneError
from sailplane.model.source import Diagnostic, Position

DEFAULT_PREFIX = "/sailplane"
# The most keys one read takes; more is an error (the load is not applied).
DEFAULT_MAX_KEYS = 50_000
RESERVED = "_"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_LINE_LIMIT = 1_000_000  # a stored origin line past this is not believed
# The blank lines one load may add to put documents at their origin's line.
PADDING_BUDGET = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object of the store: its key parts, its YAML and its origin."""

    kind: str
    namespace: str
    name: str
    text: str  # the YAML document, as written
    origin: str = ""  # the file it was applied from
    line: int = 1  # where the document starts in that file

    @property
    def path(self) -> str:
        """The key below the prefix: ``KIND/NAMESPACE/NAME``."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    def key(self, prefix: str) -> bytes:
        return f"{prefix}/{self.path}".encode()

    def encode(self) -> bytes:
        value = {"origin": self.origin, "line": self.line, "yaml": self.text}
        return json.dumps(value, sort_keys=True).encode()

    @property
    def display_name(self) -> str:
        """How loads and diagnostics name it."""
        origin = f" (from {self.origin})" if self.origin else ""
        return f"etcd:{self.path}{origin}"

    def load_text(self, line: int | None = None) -> str:
        """The document at its line of the file it came from (or ``line``)."""
        return "\n" * ((self.line if line is None else line) - 1) + self.text

    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def load_texts_of(objects: Iterable[StoredObject]) -> list[tuple[str, str]]:
    """``(name, text)`` pairs for config.loader.load_texts, each document at
    its origin's line. The blank lines that put it there are bounded per load
    (:data:`PADDING_BUDGET`): a stored line number is the writer's word, and
    50,000 keys each claiming line 999,999 must not cost 50 GB; past the
    budget a document starts at line 1 (its name still says where it came from)."""
    texts = []
    budget = PADDING_BUDGET
    for obj in objects:
        padding = obj.line - 1
        line = obj.line if padding <= budget else 1
        budget -= line - 1
        texts.append((obj.display_name, obj.load_text(line)))
    return texts


class BadEntry(SailplaneError):
    """A key or value of the store that is not a mesh object (says why)."""


def key_parts(path: str) -> tuple[str, str, str]:
    """``KIND/NAMESPACE/NAME`` -> its parts; BadEntry for any other shape."""
    parts = path.split("/")
    if len(parts) != 3 or not all(_SEGMENT.match(p) for p in parts):
        raise BadEntry("the key is not PREFIX/KIND/NAMESPACE/NAME")
    return parts[0], parts[1], parts[2]


def decode(path: str, value: bytes, limit: int) -> StoredObject:
    """The object stored at ``PREFIX/path``; BadEntry when the value is over
    ``limit`` bytes, not ours, or names another object than its key."""
    kind, namespace, name = key_parts(path)
    if len(value) > limit:
        raise BadEntry(
            f"the value is {len(value):,} bytes, over the limit of {limit:,} (--max-file-size)"
        )
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise BadEntry(f"the value is not a sailplane object (not JSON: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("yaml"), str):
        raise BadEntry("the value is not a sailplane object (no 'yaml' text)")
    origin, line = data.get("origin", ""), data.get("line", 1)
    if not isinstance(origin, str) or not isinstance(line, int) or not 0 < line < _LINE_LIMIT:
        origin, line = "", 1
    stored = StoredObject(kind, namespace, name, data["yaml"], origin, line)
    try:
        documents = parse_documents(stored.text, stored.display_name)
    except SailplaneError:
        return stored  # the load reports the syntax error at its line
    if len(documents) != 1:
        raise BadEntry(f"the value holds {len(documents)} YAML documents, not one object")
    found = identity(documents[0])
    if found != (kind, namespace, name):
        what = "/".join(found) if found else "no kind and metadata.name"
        raise BadEntry(f"the value is {what}, not the object its key names")
    return stored


def identity(document: Document) -> tuple[str, str, str] | None:
    """``(kind, namespace, name)`` a document says it is, or None."""
    data = document.data
    if not isinstance(data, Mapping):
        return None
    kind, metadata = data.get("kind"), data.get("metadata")
    if not isinstance(kind, str) or not isinstance(metadata, Mapping):
        return None
    name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return kind, namespace, name


def objects_in_file(text: str, origin: str) -> tuple[list[StoredObject], list[Diagnostic]]:
    """Cut a YAML file into objects, each with its own text and first line
    (``sailplane apply``). A document that is not an object is a diagnostic."""
    pieces = split_documents(text)
    found: list[StoredObject] = []
    problems: list[Diagnostic] = []
    if pieces is None:  # cutting is not safe: parse it whole, write each back
        documents = parse_documents(text, origin)
        texts = [
            (d, yaml.safe_dump(d.data, sort_keys=False), d.source.position.line) for d in documents
        ]
    else:
        texts = [
            (document, piece, first_line + 1)
            for first_line, piece in pieces
            for document in parse_documents(piece, origin, first_line)
        ]
    for document, piece, first in texts:
        where = identity(document)
        line = document.source.position.line
        if where is None or not all(_SEGMENT.match(p) for p in where):
            problems.append(
                Diagnostic(
                    origin,
                    Position(line, 1),
                    "not a storable object: it needs a kind "
                    "and a metadata.name (letters, digits, '.', '-', '_')",
                )
            )
            continue
        kind, namespace, name = where
        found.append(StoredObject(kind, namespace, name, piece, origin, first))
    return found, problems
