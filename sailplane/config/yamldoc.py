"""Read multi-document YAML keeping the position of every node.

PyYAML's composer (the C one when available) gives each node a start mark;
we build plain Python values from the node tree and record, for every field
path, where its value starts. That is what lets a diagnostic point at the
``subset:`` line rather than at the top of the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sailplane.errors import YamlSyntaxError
from sailplane.model.source import Diagnostic, FieldPath, Position, Source

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_constructor = yaml.SafeLoader("")  # used only to resolve scalars to Python values

# PyYAML's words for what is nearly always a line indented one step too far or too little.
_INDENTATION_HINTS = (
    "did not find expected key",
    "mapping values are not allowed",
    "expected <block end>",
    "did not find expected '-' indicator",
)


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document: its value and where each of its nodes is."""

    data: Any
    source: Source


def _position(node: yaml.Node, first_line: int = 0) -> Position:
    return Position(node.start_mark.line + 1 + first_line, node.start_mark.column + 1)


def _build(
    node: yaml.Node, path: FieldPath, positions: dict[FieldPath, Position], first_line: int
) -> Any:
    positions[path] = _position(node, first_line)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node, deep=True)
            if isinstance(key, str) and key == "<<":
                continue  # merge keys are not part of Kubernetes YAML
            out[key] = _build(value_node, (*path, str(key)), positions, first_line)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), positions, first_line) for i, item in enumerate(node.value)
        ]
    return _constructor.construct_object(node, deep=True)


def parse_documents(text: str, file: str, first_line: int = 0) -> list[Document]:
    """Parse every document in ``text``; empty documents are skipped.

    ``first_line`` (0-based) is where ``text`` starts in ``file`` when it is a
    piece of it (see :func:`split_documents`); positions count from there.
    Raises :class:`YamlSyntaxError` with the line and column of the break
    (for a piece, a message that quotes PyYAML's own mark still counts from
    the piece: callers re-parse the whole file to report an error).
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = Position(mark.line + 1 + first_line, mark.column + 1) if mark else Position(1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            start = exc.context_mark
            problem += (
                f", {exc.context} that starts at {start.line + 1 + first_line}:{start.column + 1}"
            )
        if any(text in problem for text in _INDENTATION_HINTS):
            problem += " (check the indentation of this line)"
        raise YamlSyntaxError(
            Diagnostic(file=file, position=position, message=f"YAML syntax error: {problem}")
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(
            Diagnostic(file=file, position=Position(1, 1), message=f"YAML error: {exc}")
        ) from exc
    documents = []
    for node in nodes:
        if node is None:
            continue
        positions: dict[FieldPath, Position] = {}
        try:
            data = _build(node, (), positions, first_line)
        except yaml.YAMLError as exc:
            raise YamlSyntaxError(
                Diagnostic(
                    file=file, position=_position(node, first_line), message=f"YAML error: {exc}"
                )
            ) from exc
        if data is None:
            continue
        documents.append(Document(data, Source(file, _position(node, first_line), positions)))
    return documents


# Where a document starts: "---" at column 0, then a blank or the end of the
# line. PyYAML's scanner (and libyaml's) emits a document start there in every
# context: plain scalars stop before it, quoted ones and unclosed flow
# collections fail on it, and block scalar content is never at column 0. So
# the pieces between these lines parse alone exactly as they do in the file.
# (Matched after a newline, not with ^ and MULTILINE: 6x faster.)
_DOCUMENT_START = re.compile(r"\n---(?=[ \t\r\n]|\Z)")
# What breaks that reasoning: directives (%YAML, %TAG) carry over to the
# documents after them, and "..." ends a document so that the next may be bare.
_UNSAFE_LINE = re.compile(r"\n(?:%|\.\.\.(?=[ \t\r\n]|\Z))")
# Line breaks YAML knows besides LF and CRLF (a lone CR is checked apart), and
# a byte order mark, which YAML allows only at the start of the stream.
_UNSAFE_CHARACTERS = ("\ufeff", "\x85", "\u2028", "\u2029")


def split_documents(text: str) -> list[tuple[int, str]] | None:
    """Cut ``text`` into ``(first line, text)`` pieces, one per ``---`` line
    (0-based lines; the piece before the first ``---`` is left out when it is
    empty). None when cutting is not safe: parse the whole text."""
    probe = "\n" + text  # so that the first line starts after a newline too
    if (
        _UNSAFE_LINE.search(probe)
        or any(c in text for c in _UNSAFE_CHARACTERS)
        or ("\r" in text and text.count("\r") != text.count("\r\n"))
    ):
        return None
    pieces: list[tuple[int, str]] = []
    start = line = 0
    for match in _DOCUMENT_START.finditer(probe):
        begin = match.start()  # in text: the "---", one past the newline in probe
        if begin > start:
            piece = text[start:begin]
            pieces.append((line, piece))
            line += piece.count("\n")
        start = begin
    if start < len(text) or not pieces:
        pieces.append((line, text[start:]))
    return pieces


class _ShiftedPositions(Mapping[FieldPath, Position]):
    """The positions of a document moved ``lines`` down its file, made when
    asked: only diagnostics ask, for a few, while a line added at the top of
    a file moves every document in it."""

    __slots__ = ("_base", "_lines")
    _base: Mapping[FieldPath, Position]
    _lines: int

    def __init__(self, base: Mapping[FieldPath, Position], lines: int) -> None:
        if isinstance(base, _ShiftedPositions):  # moved again: from the parsed ones
            self._base, self._lines = base._base, base._lines + lines
        else:
            self._base, self._lines = base, lines

    def __getitem__(self, path: FieldPath) -> Position:
        found = self._base[path]
        return Position(found.line + self._lines, found.column)

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


def shift_document(document: Document, lines: int) -> Document:
    """The same document ``lines`` further down its file: what parsing it
    there would give (pieces start at a line boundary, so columns do not
    change). The data is shared; nothing mutates it."""
    source = document.source
    return Document(
        document.data,
        Source(
            source.file,
            Position(source.position.line + lines, source.position.column),
            _ShiftedPositions(source.positions, lines),
        ),
    )
