"""Check an object's fields against its kind's declaration (config/fields/).

Run by each parser before it reads anything. A field may be spelt with its
JSON name (``customTags``) or its proto name (``custom_tags``), as Istio's
protojson decoding accepts both; a field in no declaration is
unknown (a typo loses a setting: a warning with "did you mean", an error in
a security policy); a known field that sailplane does not implement is
reported when set, so that nothing the user wrote is silently dropped.
Values of the wrong type are left to the parser, which reads the rest.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sailplane.config.fields import DECLARED, IMPLEMENTED, Field, KindFields, Support
from sailplane.config.reader import ObjectReader, did_you_mean, json_name
from sailplane.model.source import FieldPath, Severity


@dataclass(slots=True)
class _Node:
    """One declared field and the fields under it; ``items`` says whether its
    value is a list (``[]``) or map (``{}``) of messages, or one (``""``)."""

    declared: Field = IMPLEMENTED
    items: str = ""
    children: dict[str, _Node] = field(default_factory=dict)


_SEGMENT = re.compile(r"([^.\[\]{}]+)(\[\]|\{\})?")


def split_path(path: str) -> list[tuple[str, str]]:
    """``"http[].retries"`` -> ``[("http", "[]"), ("retries", "")]``."""
    out = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError(f"bad field path {path!r}")
        out.append((match.group(1), match.group(2) or ""))
    return out


@functools.cache
def declaration_tree(kind: str) -> _Node:
    """The kind's declaration as a tree, rooted at ``spec``."""
    root = _Node()
    for path, declared in DECLARED[kind].fields.items():
        node = root
        segments = split_path(path)
        for name, _ in segments:
            node = node.children.setdefault(name, _Node())
        node.declared, node.items = declared, segments[-1][1]
    return root


def check_declared_fields(r: ObjectReader) -> None:
    """Report the unknown and the not implemented fields of ``spec`` (see the
    module's docstring); values of the wrong type are left to the parser."""
    declared = DECLARED.get(r.kind)
    spec = r.raw(("spec",))
    if declared is not None and isinstance(spec, Mapping):
        _walk(r, declared, declaration_tree(r.kind), spec, ("spec",))


def _walk(
    r: ObjectReader, declared: KindFields, node: _Node, value: Mapping[Any, Any], path: FieldPath
) -> None:
    for key, item in value.items():
        name = str(key)
        sub = (*path, name)
        child = node.children.get(name)
        if child is None and "_" in name:
            # The proto field name: Istio's protojson decoding accepts it as the
            # JSON name, without a word, but not both spellings at once.
            child = node.children.get(json_name(name))
            if child is not None and json_name(name) in value:
                r.report(
                    sub,
                    f"{name!r} and {json_name(name)!r} are the same field; set it once",
                    code="IST0106",
                )
                continue
        if child is None:
            r.report(
                sub,
                f"unknown field {name!r}{did_you_mean(name, node.children)}",
                severity=declared.unknown,
                code="IST0106",
            )
            continue
        if item is None:
            continue
        support = child.declared.support
        if support is Support.UNSUPPORTED:
            if not any(_same(item, h) for h in child.declared.harmless):
                r.report(sub, f"{name} is not supported yet; ignored", Severity.WARNING)
            continue
        if support is Support.REJECTED:
            r.report(sub, f"{name} is not supported yet", code="IST0106")
            continue
        if support is not Support.IMPLEMENTED or not child.children:
            continue  # REPORTED by the parser, INERT, or a scalar
        if child.items == "[]":
            for i, element in enumerate(item if isinstance(item, list) else ()):
                if isinstance(element, Mapping):
                    _walk(r, declared, child, element, (*sub, i))
        elif isinstance(item, Mapping) and child.items == "{}":
            for entry, element in item.items():
                if isinstance(element, Mapping):
                    _walk(r, declared, child, element, (*sub, str(entry)))
        elif isinstance(item, Mapping):
            _walk(r, declared, child, item, sub)


def _same(value: object, harmless: object) -> bool:
    """Equal and of the same type (``1`` is not ``True``); a tuple stands for a list."""
    if isinstance(harmless, tuple):
        return isinstance(value, list) and tuple(value) == harmless
    return type(value) is type(harmless) and value == harmless


# -- the README's list -------------------------------------------------------

# The order of the README's table; kinds with nothing to list are left out.
README_KINDS = (
    "Service",
    "ServiceEntry",
    "WorkloadEntry",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "PeerAuthentication",
    "Policy",
    "MeshPolicy",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Sidecar",
    "Telemetry",
)
_TITLES = {"Service": "`v1 Service`", "Policy": "`Policy`", "MeshPolicy": "`MeshPolicy`"}
# DestinationRule's traffic policy fields repeat per subset and per port.
_REPEATS = re.compile(r"^subsets\[\]\.|portLevelSettings\[\]\.")


def readme_field_list() -> str:
    """The README's list of the fields each kind knows but does not implement
    (``tests/unit/test_field_support.py`` checks that the README has it)."""
    lines = []
    for kind in README_KINDS:
        fields = DECLARED[kind].fields
        listed: list[str] = []
        inert: list[str] = []
        for path, declared in fields.items():
            if declared.support is Support.IMPLEMENTED:
                continue
            general = _REPEATS.sub("", path)
            if general != path and fields.get(general) == declared:
                continue  # listed once, under trafficPolicy
            text = f"`{path}`"
            if declared.harmless:
                text += f" (unless {' or '.join(f'`{_yaml(v)}`' for v in declared.harmless)})"
            (inert if declared.support is Support.INERT else listed).append(text)
        if not listed and not inert:
            continue
        title = _TITLES.get(kind, kind)
        if kind == "DestinationRule":
            title += " (`trafficPolicy` fields also per subset and per port)"
        line = f"- {title}: {', '.join(listed)}"
        if inert:
            line += (
                f"; accepted without a word, as meaningless outside a cluster: {', '.join(inert)}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)
