"""Spot checks of generated Envoy resources (see corpus.yaml): a proxy's
resources of one type, by name or any, as protobuf JSON (field names as in
the .proto); ``contains`` / ``excludes`` text of its compact JSON, or a
``path`` with an ``equals`` value."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Snapshot

TYPES = {
    "listener": LISTENER,
    "route": ROUTE,
    "cluster": CLUSTER,
    "endpoint": ENDPOINT,
    "secret": SECRET,
}
_SEGMENT = re.compile(r"^([^\[\]]+)((?:\[[^\]]*\])*)$")


@dataclass(frozen=True, slots=True)
class Check:
    proxy: str
    type: str
    name: str | None = None
    contains: str | None = None
    excludes: str | None = None
    path: str | None = None
    equals: object = None

    @classmethod
    def of(cls, data: Mapping[str, Any], where: str) -> Check:
        unknown = set(data) - {"proxy", "type", "name", "contains", "excludes", "path", "equals"}
        if unknown or "proxy" not in data or data.get("type") not in TYPES:
            raise ValueError(f"{where}: bad check {dict(data)!r}")
        if sum(k in data for k in ("contains", "excludes", "path")) != 1:
            raise ValueError(f"{where}: a check has one of contains, excludes, path")
        if "path" in data and "equals" not in data:
            raise ValueError(f"{where}: a path check needs equals")
        return cls(**{str(k): v for k, v in data.items()})

    def describe(self) -> str:
        what = f"{self.type} {self.name!r}" if self.name else f"any {self.type}"
        if self.contains is not None:
            test = f"contains {self.contains!r}"
        elif self.excludes is not None:
            test = f"excludes {self.excludes!r}"
        else:
            test = f"{self.path} == {self.equals!r}"
        return f"{self.proxy}: {what} {test}"


def resources(snapshot: Snapshot, kind: str) -> dict[str, Any]:
    """name -> the resource as plain data."""
    return {
        name: json_format.MessageToDict(message, preserving_proto_field_name=True)
        for name, message in snapshot.get(TYPES[kind]).messages.items()
    }


def holds(check: Check, found: Mapping[str, Any]) -> bool:
    """Whether ``check`` holds on ``found`` (name -> resource of its type):
    on the named resource, or on any (``excludes``: on every)."""
    if check.name is not None:
        if check.name not in found:
            return False
        candidates = [found[check.name]]
    else:
        candidates = list(found.values())
    if check.excludes is not None:
        return all(check.excludes not in _text(c) for c in candidates)
    if check.contains is not None:
        return any(check.contains in _text(c) for c in candidates)
    assert check.path is not None
    return any(value == check.equals for c in candidates for value in select(c, check.path))


def _text(tree: Any) -> str:
    return json.dumps(tree, sort_keys=True)


def select(tree: Any, path: str) -> Iterator[Any]:
    """The values at ``path``: ``a.b[0].c[*].d[key=value]``."""
    values = [tree]
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise ValueError(f"bad path segment {segment!r} in {path!r}")
        values = [v[match.group(1)] for v in values if isinstance(v, dict) and match.group(1) in v]
        for index in re.findall(r"\[([^\]]*)\]", match.group(2)):
            values = list(_index(values, index))
    yield from values


def _index(values: list[Any], index: str) -> Iterator[Any]:
    for value in values:
        if not isinstance(value, list):
            continue
        if index == "*":
            yield from value
        elif "=" in index:
            key, _, wanted = index.partition("=")
            yield from (v for v in value if isinstance(v, dict) and str(v.get(key)) == wanted)
        elif index.isdigit() and int(index) < len(value):
            yield value[int(index)]
