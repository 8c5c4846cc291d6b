"""Typed, located access to one object's fields.

A parser asks for ``reader.string(("spec", "host"), required=True)``; a
missing or mistyped field becomes a :class:`Diagnostic` at the field's own
line and the parser gets ``None`` back and decides what that object loses.
Parsers never raise for bad input: they collect.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from sailplane.config.yamldoc import excerpt
from sailplane.model.hosts import is_ip_address
from sailplane.model.source import (
    Diagnostic,
    FieldPath,
    Severity,
    Source,
    format_field_path,
)

_MISSING = object()


E = TypeVar("E", bound=str)  # a Literal type of enum values


class ObjectReader:
    def __init__(self, data: Mapping[str, Any], source: Source, kind: str) -> None:
        self.data = data
        self.source = source
        self.kind = kind
        meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        self.name = str(meta.get("name") or "")
        self.namespace = str(meta.get("namespace") or "default")
        self.diagnostics: list[Diagnostic] = []

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name or '<unnamed>'}"

    # -- diagnostics -------------------------------------------------------

    def report(
        self,
        path: FieldPath,
        message: str,
        severity: Severity = Severity.ERROR,
        code: str = "",
    ) -> None:
        path = self.written(path)
        diagnostic = Diagnostic(
            file=self.source.file,
            position=self.source.locate(path),
            message=message,
            obj=self.label,
            field_path=format_field_path(path),
            severity=severity,
            code=code,
        )
        # Parsers may read a field twice (a fallback, a second look); say it once.
        if diagnostic not in self.diagnostics:
            self.diagnostics.append(diagnostic)

    @property
    def failed(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)

    # -- typed getters -----------------------------------------------------

    def raw(self, path: FieldPath) -> Any:
        """The value at ``path`` (field names as Istio's JSON names them, in
        lowerCamelCase); a field spelt with its proto name (snake_case) is
        found too, as Istio's protojson decoding accepts both."""
        node: Any = self.data
        for part in path:
            if isinstance(part, int) and isinstance(node, Mapping):
                # A map with integer keys (portLevelMtls: {9080: ...}), as YAML reads it.
                if part not in node:
                    return _MISSING
                node = node[part]
            elif isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    return _MISSING
                node = node[part]
            else:
                if not isinstance(node, Mapping):
                    return _MISSING
                key = _spelt(node, part)
                if key is None:
                    return _MISSING
                node = node[key]
        return node

    def written(self, path: FieldPath) -> FieldPath:
        """``path`` as the YAML spells it (a proto name where one was used)."""
        node: Any = self.data
        out: list[str | int] = []
        for part in path:
            key: str | int | None = part
            if isinstance(part, str) and isinstance(node, Mapping):
                key = _spelt(node, part) or part
                node = node.get(key)
            elif isinstance(part, int) and isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(part, int) and isinstance(node, list) and part < len(node):
                node = node[part]
            else:
                node = None
            out.append(part if key is None else key)
        return tuple(out)

    def has(self, path: FieldPath) -> bool:
        """Whether the field is present and not null."""
        value = self.raw(path)
        return value is not _MISSING and value is not None

    def _get(self, path: FieldPath, types: tuple[type, ...], what: str, required: bool) -> Any:
        value = self.raw(path)
        if value is _MISSING or value is None:
            if required:
                self.report(path, "required field is missing", code="IST0106")
            return None
        if isinstance(value, bool) and bool not in types:
            self.report(path, f"must be {what}, not {excerpt(repr(value))}", code="IST0106")
            return None
        if not isinstance(value, types):
            self.report(
                path,
                f"must be {what}, not {type(value).__name__} {excerpt(repr(value))}",
                code="IST0106",
            )
            return None
        return value

    def string(self, path: FieldPath, required: bool = False) -> str | None:
        value = self._get(path, (str, int, float), "a string", required)
        return None if value is None else str(value)

    def integer(self, path: FieldPath, required: bool = False) -> int | None:
        value = self._get(path, (int,), "an integer", required)
        return None if value is None else int(value)

    def port(self, path: FieldPath, required: bool = False) -> int | None:
        value = self.integer(path, required)
        if value is not None and not 0 < value < 65536:
            self.report(path, f"port {value} is out of range 1-65535", code="IST0106")
            return None
        return value

    def mapping(self, path: FieldPath, required: bool = False) -> Mapping[str, Any] | None:
        value = self._get(path, (dict,), "a mapping", required)
        return value if value is None else dict(value)

    def sequence(self, path: FieldPath, required: bool = False) -> list[Any]:
        value = self._get(path, (list,), "a list", required)
        return [] if value is None else list(value)

    def labels(self, path: FieldPath) -> dict[str, str]:
        """A ``{string: string}`` map such as labels or a selector, checked
        against Kubernetes' label syntax (a selector that can never match is
        a mistake, not a preference)."""
        value = self.mapping(path)
        if value is None:
            return {}
        out: dict[str, str] = {}
        for key, item in value.items():
            if isinstance(item, (dict, list)) or item is None:
                self.report((*path, str(key)), "label values must be strings", code="IST0106")
                continue
            text = str(item).lower() if isinstance(item, bool) else str(item)
            problem = label_key_problem(str(key)) or label_value_problem(text)
            if problem:
                self.report((*path, str(key)), problem, code="IST0106")
                continue
            out[str(key)] = text
        return out

    def regex(self, path: FieldPath, required: bool = False) -> str | None:
        """A regular expression Envoy accepts (RE2 syntax)."""
        value = self.string(path, required)
        if value is None:
            return None
        problem = regex_problem(value)
        if problem:
            self.report(path, f"invalid regex {value!r}: {problem}", code="IST0106")
            return None
        return value

    def host(self, path: FieldPath, required: bool = False) -> str | None:
        """A host name as Istio accepts it: a DNS name, optionally with a
        leading ``*`` wildcard, or an IP address."""
        value = self.string(path, required)
        if value is None:
            return None
        problem = host_problem(value)
        if problem:
            self.report(path, problem, code="IST0106")
            return None
        return value

    def enum(self, path: FieldPath, allowed: tuple[E, ...], default: E) -> E:
        """One of ``allowed`` (a Literal type's values), else ``default``
        with a diagnostic."""
        value = self.string(path)
        if value is None:
            return default
        if value not in allowed:
            self.report(
                path,
                f"unknown value {value!r}{did_you_mean(value, allowed)}; "
                f"expected one of {', '.join(allowed)}",
                code="IST0106",
            )
            return default
        return value  # narrowed to E by the membership test

    def duration(self, path: FieldPath, required: bool = False) -> float | None:
        value = self.string(path, required)
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.report(path, f"invalid duration {value!r}; use e.g. 500ms, 1s, 1m", code="IST0106")
        return seconds

    def percentage(self, path: FieldPath) -> float | None:
        """``{value: 12.5}`` (Istio's Percent), bounded 0-100."""
        raw = self.raw(path)
        if raw is _MISSING or raw is None:
            return None
        value = raw.get("value") if isinstance(raw, Mapping) else raw
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.report(path, "must be a percentage like {value: 50}", code="IST0106")
            return None
        if not 0 <= value <= 100:
            self.report(path, f"percentage {value} is outside 0-100", code="IST0106")
            return None
        return float(value)

    def boolean(self, path: FieldPath) -> bool | None:
        value = self._get(path, (bool,), "true or false", False)
        return None if value is None else bool(value)


def json_name(proto_name: str) -> str:
    """A proto field name's JSON name, as protoc derives it: each ``_`` is
    dropped and the letter after it upper-cased (``custom_tags`` ->
    ``customTags``, ``consecutive_5xx_errors`` -> ``consecutive5xxErrors``)."""
    head, *rest = proto_name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _spelt(node: Mapping[str, Any], name: str) -> str | None:
    """The key of ``node`` that is field ``name``: itself, else its proto spelling."""
    if name in node:
        return name
    for key in node:
        if isinstance(key, str) and "_" in key and json_name(key) == name:
            return key
    return None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``" (did you mean 'weight'?)"`` when ``word`` looks like a typo of one
    of ``known`` (difflib's closest match, case-insensitive), else ``""``."""
    by_folded = {name.lower(): name for name in known}
    close = difflib.get_close_matches(word.lower(), list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_RULE = (
    "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


def dns_subdomain_problem(text: str) -> str:
    """Kubernetes object names (RFC 1123 subdomain); "" when valid."""
    if len(text) > 253 or not all(_DNS_LABEL.fullmatch(p) for p in text.split(".")):
        return (
            f"invalid name {text!r}: use lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return ""


def label_key_problem(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix and dns_subdomain_problem(prefix):
        return f"invalid label key {key!r}: the prefix must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"invalid label key {key!r}: use {_LABEL_RULE}"
    return ""


def label_value_problem(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return f"invalid label value {value!r}: use {_LABEL_RULE}, or nothing"
    return ""


def host_problem(host: str) -> str:
    """Istio's host syntax: ``*``, ``*.example.com``, ``name.ns``, an IP."""
    if is_ip_address(host):
        return ""
    name = host[1:] if host.startswith("*") else host
    if host == "*":
        return ""
    name = name.removeprefix(".")
    labels = name.split(".")
    if len(host) > 255 or not all(len(p) <= 63 and _HOST_LABEL.fullmatch(p) for p in labels):
        return (
            f"invalid host {host!r}: use a DNS name (letters, digits, '-' and '.'), "
            "optionally starting with '*.'"
        )
    return ""


# Python's re accepts these; RE2, which Envoy uses, does not (Envoy would NACK).
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]")


def regex_problem(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    unsupported = _NOT_RE2.search(pattern)
    if unsupported:
        return (
            f"{unsupported.group()!r} at position {unsupported.start()} is not RE2 syntax "
            "(no lookaround or backreferences)"
        )
    return ""


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")


def parse_duration(text: str) -> float | None:
    """Go / protobuf duration strings: ``1s``, ``0.5s``, ``300ms``, ``1m30s``."""
    text = text.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None
