"""Plain data for the golden files: model values and Envoy protos as YAML.

Model values (``sailplane.model`` dataclasses) go through :func:`model_tree`,
a generic serialiser: fields in declaration order, fields equal to their
default left out, enums by value, sets sorted, mappings sorted by key, and a
``Source`` as ``file:line:column``. Protos go through :func:`proto_tree`
(protobuf's JSON mapping, field names as in the .proto, keys sorted).

Shared blocks: :func:`share` replaces every subtree that is *exactly* equal
(whole-subtree equality) to a named block with ``{$ref: NAME}``, and
:func:`share_within` a large subtree equal to one earlier in the same
document with ``{$ref: '#/JSON/pointer'}`` to it; :func:`expand` undoes both,
and ``expand(share(tree)) == tree`` always, so a ``$ref`` hides no
difference. The named blocks are written once, in
``tests/golden/translate/_shared.yaml`` (see shared.py).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from sailplane.model.source import Source

REF = "$ref"

Tree = Any  # what yaml.safe_load gives: dict / list / str / int / float / bool / None


# -- the model --------------------------------------------------------------


def _is_default(field: dataclasses.Field[Any], value: object) -> bool:
    if field.default is not dataclasses.MISSING:
        return bool(value == field.default)
    if field.default_factory is not dataclasses.MISSING:
        return bool(value == field.default_factory())
    return False


def _mapping_key(item: tuple[object, object]) -> tuple[str, str]:
    key = item[0]
    # Numbers in numeric order, strings in text order, never compared across.
    return (type(key).__name__, f"{key:020d}" if isinstance(key, int) else str(key))


def model_tree(value: object) -> Tree:
    """A model value as plain data (see the module docstring). Fields that do
    not take part in equality (``compare=False``: caches, derived ids, the
    input digest, source positions) are left out: they are not the value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Source):
        return f"{value.file}:{value.position.line}:{value.position.column}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Tree] = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.compare and not _is_default(field, item):
                out[field.name] = model_tree(item)
        return out
    if isinstance(value, bytes):  # PEM from Secrets: its size, never its content
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {k: model_tree(v) for k, v in sorted(value.items(), key=_mapping_key)}
    if isinstance(value, set | frozenset):
        return sorted((model_tree(v) for v in value), key=canonical)
    if isinstance(value, tuple | list):
        return [model_tree(v) for v in value]
    raise TypeError(f"no golden rendering for {type(value).__name__}: {value!r}")


def dump_model(tree: Tree) -> str:
    """Collections of scalars in flow style (``{app: a, version: v1}``), the rest as blocks."""
    text: str = yaml.safe_dump(tree, sort_keys=False, default_flow_style=None, width=100)
    return text


# -- protos -------------------------------------------------------------------


def proto_tree(message: Message) -> Tree:
    return json.loads(
        json_format.MessageToJson(message, preserving_proto_field_name=True, sort_keys=True)
    )


def canonical(tree: Tree) -> str:
    return json.dumps(tree, sort_keys=True, separators=(",", ":"))


class Ref(dict[str, str]):
    """``{$ref: NAME}``, written on one line."""

    def __init__(self, name: str) -> None:
        super().__init__({REF: name})


class _Dumper(yaml.SafeDumper):
    pass


def _represent_ref(dumper: yaml.SafeDumper, ref: Ref) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", dict(ref), flow_style=True)


_Dumper.add_representer(Ref, _represent_ref)


def dump_protos(tree: Tree) -> str:
    text: str = yaml.dump(tree, Dumper=_Dumper, sort_keys=False, width=100)
    return text


# -- shared blocks ----------------------------------------------------------


def _walk(tree: Tree) -> Iterable[Tree]:
    yield tree
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _walk(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _walk(value)


def share(tree: Tree, blocks: Mapping[str, Tree], keep_root: bool = False) -> Tree:
    """``tree`` with every subtree equal to a block replaced by ``{$ref: NAME}``,
    outermost first (``keep_root``: never the whole tree, for writing a block
    in terms of smaller ones)."""
    if any(isinstance(node, dict) and REF in node for node in _walk(tree)):
        raise ValueError(f"{REF!r} is already a key in the tree: a reference would be ambiguous")
    by_text = {canonical(block): name for name, block in blocks.items()}
    if len(by_text) != len(blocks):
        raise ValueError("two shared blocks are equal: a reference would be ambiguous")

    def replace(node: Tree, root: bool) -> Tree:
        if not isinstance(node, dict | list):
            return node
        if not root:
            name = by_text.get(canonical(node))
            if name is not None:
                return Ref(name)
        if isinstance(node, dict):
            return {k: replace(v, False) for k, v in node.items()}
        return [replace(v, False) for v in node]

    return replace(tree, keep_root)


def _pointer(path: tuple[str | int, ...]) -> str:
    """RFC 6901 JSON pointer, as a same-document reference: ``#/0/filter_chains``."""
    return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _resolve(root: Tree, pointer: str) -> Tree:
    node = root
    for part in pointer[2:].split("/") if pointer != "#" else ():
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _lines(node: Tree) -> int:
    """About how many lines ``node`` takes in block style."""
    if isinstance(node, Ref) or not isinstance(node, dict | list) or not node:
        return 1
    values = node.values() if isinstance(node, dict) else node
    return sum(
        _lines(v) + (1 if isinstance(node, dict) and isinstance(v, dict | list) and v else 0)
        for v in values
    )


def share_within(tree: Tree, min_lines: int) -> Tree:
    """``tree`` with every subtree of at least ``min_lines`` lines that is equal
    to one written earlier in the same document replaced by a reference to
    that one, ``{$ref: '#/JSON/pointer'}`` (the two filter chains of a
    PERMISSIVE port carry the same filters, for one)."""
    seen: dict[str, str] = {}

    def replace(node: Tree, path: tuple[str | int, ...]) -> Tree:
        if isinstance(node, Ref) or not isinstance(node, dict | list):
            return node
        if path and _lines(node) >= min_lines:
            text = canonical(node)
            if text in seen:
                return Ref(seen[text])
            seen[text] = _pointer(path)
        if isinstance(node, dict):
            return {k: replace(v, (*path, k)) for k, v in node.items()}
        return [replace(v, (*path, i)) for i, v in enumerate(node)]

    return replace(tree, ())


def expand(tree: Tree, blocks: Mapping[str, Tree], root: Tree = None) -> Tree:
    """The inverse of :func:`share` and :func:`share_within`: every ``{$ref:
    NAME}`` becomes block NAME, every ``{$ref: '#/...'}`` the subtree of
    ``root`` (default: ``tree``) it points at."""
    root = tree if root is None else root
    if isinstance(tree, dict):
        if set(tree) == {REF}:
            name = tree[REF]
            if name.startswith("#"):
                return expand(_resolve(root, name), blocks, root)
            return expand(blocks[name], blocks)
        return {k: expand(v, blocks, root) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand(v, blocks, root) for v in tree]
    return tree


def references(tree: Tree) -> set[str]:
    """The names of the shared blocks ``tree`` refers to."""
    return {
        node[REF]
        for node in _walk(tree)
        if isinstance(node, dict) and set(node) == {REF} and not node[REF].startswith("#")
    }
