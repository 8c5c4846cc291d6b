"""Read multi-document YAML keeping the position of every node.

PyYAML's composer (the C one when available) gives each node a start mark;
we build plain Python values from the node tree and record, for every field
path, where its value starts. That is what lets a diagnostic point at the
``subset:`` line rather than at the top of the document.
"""

from __future__ import annotations

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


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _build(node: yaml.Node, path: FieldPath, positions: dict[FieldPath, Position]) -> Any:
    positions[path] = _position(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node, deep=True)
            if isinstance(key, str) and key == "<<":
                continue  # merge keys are not part of Kubernetes YAML
            out[key] = _build(value_node, (*path, str(key)), positions)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), positions) for i, item in enumerate(node.value)]
    return _constructor.construct_object(node, deep=True)


def parse_documents(text: str, file: str) -> list[Document]:
    """Parse every document in ``text``; empty documents are skipped.

    Raises :class:`YamlSyntaxError` with the line and column of the break.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            start = exc.context_mark
            problem += f", {exc.context} that starts at {start.line + 1}:{start.column + 1}"
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
            data = _build(node, (), positions)
        except yaml.YAMLError as exc:
            raise YamlSyntaxError(
                Diagnostic(file=file, position=_position(node), message=f"YAML error: {exc}")
            ) from exc
        if data is None:
            continue
        documents.append(Document(data, Source(file, _position(node), positions)))
    return documents
