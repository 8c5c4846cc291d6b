"""Read multi-document YAML keeping the position of every node.

PyYAML's composer (the C one when available) gives each node a start mark;
we build plain Python values from the node tree and record, for every field
path, where its value starts. That is what lets a diagnostic point at the
``subset:`` line rather than at the top of the document.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import yaml

from sailplane.errors import AliasBudgetError, YamlSyntaxError
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


# How many nodes aliases may add to one load when they are expanded. A
# composed file shares the node an alias names, so it stays small; building
# values from it copies that node at every use: nine nested levels of ten
# aliases ("billion laughs", under 1 KB) would be 10^9 nodes. Realistic
# anchors (shared labels, a repeated route) add a few thousand. The budget
# is shared by every file of a load, so that many small bombs are one big one.
ALIAS_NODE_BUDGET = 200_000
# How much of a value a diagnostic quotes.
EXCERPT_CHARS = 80


class AliasBudget:
    """What is left of :data:`ALIAS_NODE_BUDGET` in one load."""

    __slots__ = ("remaining",)

    def __init__(self, nodes: int = ALIAS_NODE_BUDGET) -> None:
        self.remaining = nodes


class _Walk:
    """Counts the nodes of one text built a second time (through an alias)."""

    __slots__ = ("budget", "file", "first_line", "seen")

    def __init__(self, file: str, first_line: int, budget: AliasBudget) -> None:
        # ids of the nodes of the document being walked, alive while it is.
        self.seen: set[int] = set()
        self.budget = budget
        self.file = file
        self.first_line = first_line

    def visit(self, node: yaml.Node) -> None:
        if id(node) not in self.seen:
            self.seen.add(id(node))
            return
        self.budget.remaining -= 1
        if self.budget.remaining < 0:
            raise AliasBudgetError(
                Diagnostic(
                    self.file,
                    _position(node, self.first_line),
                    f"YAML error: aliases expand to more than {ALIAS_NODE_BUDGET:,} "
                    "nodes (an alias bomb?); the file is not used",
                )
            )


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters."""
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Scalars are resolved by the safe constructor's own functions, called
# directly: ``construct_object`` would remember every node it ever built
# (a leak across loads) and is not safe to share between threads.
_SCALARS = yaml.SafeLoader.yaml_constructors


def _scalar(node: yaml.Node) -> Any:
    construct = _SCALARS.get(node.tag) or _SCALARS[None]
    return construct(_constructor, node)


def _key(node: yaml.Node, file: str, first_line: int) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        what = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
        raise YamlSyntaxError(
            Diagnostic(
                file,
                _position(node, first_line),
                f"YAML error: a mapping key must be a string, not {what}",
            )
        )
    key = _scalar(node)
    # Keys repeat in every document (spec, metadata, name): one string each.
    return sys.intern(key) if type(key) is str else key


def _build(
    node: yaml.Node,
    path: FieldPath,
    positions: dict[FieldPath, Position] | None,
    first_line: int,
    walk: _Walk,
) -> Any:
    """The value of ``node``; with ``positions``, where each node under it is
    (keyed by field path). Without, no path is built: a load keeps no
    positions, and finds them again when a diagnostic asks
    (:class:`_LazyPositions`)."""
    walk.visit(node)
    if positions is not None:
        positions[path] = _position(node, first_line)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = _key(key_node, walk.file, first_line)
            if isinstance(key, str) and key == "<<":
                continue  # merge keys are not part of Kubernetes YAML
            if key in seen:  # kubectl refuses these too: which one was meant?
                first = _position(seen[key], first_line)
                raise YamlSyntaxError(
                    Diagnostic(
                        walk.file,
                        _position(key_node, first_line),
                        f"YAML error: duplicate key {excerpt(str(key))!r}, already set at "
                        f"{first.line}:{first.column} (which one is meant?)",
                    )
                )
            seen[key] = key_node
            child = (*path, str(key)) if positions is not None else path
            out[key] = _build(value_node, child, positions, first_line, walk)
        return out
    if isinstance(node, yaml.SequenceNode):
        if positions is None:
            return [_build(item, path, None, first_line, walk) for item in node.value]
        return [
            _build(item, (*path, i), positions, first_line, walk)
            for i, item in enumerate(node.value)
        ]
    return _scalar(node)


_END = object()


def _syntax_error(
    exc: yaml.MarkedYAMLError, text: str, file: str, first_line: int
) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    position = Position(mark.line + 1 + first_line, mark.column + 1) if mark else Position(1, 1)
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.context_mark and exc.problem:
        start = exc.context_mark
        problem += (
            f", {exc.context} that starts at {start.line + 1 + first_line}:{start.column + 1}"
        )
    if any(hint in problem for hint in _INDENTATION_HINTS):
        problem += " (check the indentation of this line)"
    elif mark is not None and text[mark.index : mark.index + 1] == "\t":
        problem += " (a tab: YAML indents with spaces only)"
    return YamlSyntaxError(
        Diagnostic(file=file, position=position, message=f"YAML syntax error: {problem}")
    )


def parse_documents(
    text: str, file: str, first_line: int = 0, aliases: AliasBudget | None = None
) -> list[Document]:
    """Parse every document in ``text``; empty documents are skipped.

    ``first_line`` (0-based) is where ``text`` starts in ``file`` when it is a
    piece of it (see :func:`split_documents`); positions count from there.
    Raises :class:`YamlSyntaxError` with the line and column of the break
    (for a piece, a message that quotes PyYAML's own mark still counts from
    the piece: callers re-parse the whole file to report an error).
    ``aliases`` is what alias expansion may still add (one budget a load).

    The positions of a document's nodes are not kept: they were two thirds
    of what a loaded mesh held (a tuple and a Position for every node, ~5 MB
    for 1,000 ServiceEntries). They are found by parsing the text again, at
    most once, the first time a diagnostic asks (:class:`_TextPositions`).
    """
    budget = aliases if aliases is not None else AliasBudget()
    parsed = list(_parse(text, file, first_line, budget, positions=False))
    if not parsed:
        return []
    again = _TextPositions(text, file, first_line)
    return [
        Document(data, Source(file, where, _LazyPositions(again, index)))
        for index, (data, where, _) in enumerate(parsed)
    ]


def _parse(
    text: str, file: str, first_line: int, aliases: AliasBudget, positions: bool
) -> Iterator[tuple[Any, Position, dict[FieldPath, Position] | None]]:
    """Each non-empty document of ``text``: its value, where it starts and,
    if asked for, where each of its nodes is."""
    walk = _Walk(file, first_line, aliases)
    # One document's nodes at a time: a file of a thousand documents never
    # holds the node trees of all of them (~25 MB at 400 KB of YAML).
    nodes = yaml.compose_all(text, Loader=_Loader)
    while True:
        try:
            item = next(nodes, _END)
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, text, file, first_line) from exc
        except yaml.YAMLError as exc:
            raise YamlSyntaxError(
                Diagnostic(
                    file=file,
                    position=Position(1 + first_line, 1),
                    message=f"YAML error: {excerpt(str(exc), 200)}",
                )
            ) from exc
        if item is _END:
            return
        node = cast("yaml.Node | None", item)
        # Anchors do not cross documents, and the nodes of the last one are
        # gone: their ids may come back.
        walk.seen.clear()
        if node is None:
            continue
        found: dict[FieldPath, Position] | None = {} if positions else None
        try:
            data = _build(node, (), found, first_line, walk)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = (
                Position(mark.line + 1 + first_line, mark.column + 1)
                if mark
                else _position(node, first_line)
            )
            problem = exc.problem or exc.context or "invalid value"
            raise YamlSyntaxError(
                Diagnostic(file=file, position=where, message=f"YAML error: {problem}")
            ) from exc
        except RecursionError as exc:
            raise YamlSyntaxError(
                Diagnostic(
                    file=file,
                    position=_position(node, first_line),
                    message="YAML error: the document is nested too deeply",
                )
            ) from exc
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            # A scalar the safe constructor cannot build (a bad timestamp, ...).
            raise YamlSyntaxError(
                Diagnostic(
                    file=file,
                    position=_position(node, first_line),
                    message=f"YAML error: {excerpt(str(exc), 200)}",
                )
            ) from exc
        if data is not None:
            yield data, _position(node, first_line), found


class _TextPositions:
    """The positions of the documents of one text, found by parsing it once
    more, as far as the documents asked for: however many of a file's
    documents a load reports problems in, the file is parsed again at most
    once. The text parsed once already, so it parses again the same way,
    within any alias budget it met then."""

    __slots__ = ("_found", "_rest", "_source")

    def __init__(self, text: str, file: str, first_line: int) -> None:
        self._source: tuple[str, str, int] | None = (text, file, first_line)
        self._found: list[dict[FieldPath, Position]] = []
        self._rest: Iterator[tuple[Any, Position, dict[FieldPath, Position] | None]] | None = None

    def __deepcopy__(self, memo: object) -> _TextPositions:
        return self  # what it finds never changes (dataclasses.asdict copies deeply)

    def of(self, index: int) -> dict[FieldPath, Position]:
        with _REPARSING:  # a generator runs in one thread at a time
            if self._source is not None:  # the first question: parse from here on
                text, file, first_line = self._source
                self._rest = _parse(text, file, first_line, AliasBudget(), positions=True)
                self._source = None
            while len(self._found) <= index and self._rest is not None:
                try:
                    item = next(self._rest, None)
                except YamlSyntaxError:  # not for a text that parsed once
                    item = None
                if item is None:
                    self._rest = None  # the parser and its state go
                    break
                self._found.append(item[2] or {})
            return self._found[index] if index < len(self._found) else {}


_REPARSING = threading.Lock()


class _LazyPositions(Mapping[FieldPath, Position]):
    """The positions of the ``index``-th non-empty document of a text (see
    :class:`_TextPositions`): diagnostics ask for a few; most documents are
    never asked."""

    __slots__ = ("_index", "_text")

    def __init__(self, text: _TextPositions, index: int) -> None:
        self._text, self._index = text, index

    def __getitem__(self, path: FieldPath) -> Position:
        return self._text.of(self._index)[path]

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self._text.of(self._index))

    def __len__(self) -> int:
        return len(self._text.of(self._index))


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
