"""The vocabulary of the field declarations: what a field's support is, and
the helpers and shared message fragments the declarations are written with."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sailplane.model.source import Severity


class Support(enum.Enum):
    IMPLEMENTED = "implemented"
    # Known, not implemented: a warning when set ("X is not supported yet;
    # ignored"); the rest of the object applies.
    UNSUPPORTED = "unsupported"
    # Known, not implemented, and unsafe to ignore (it narrows who a security
    # policy matches): an error when set.
    REJECTED = "rejected"
    # Not implemented; the kind's parser reports it in its own words (which
    # say what happens instead), so the field check says nothing.
    REPORTED = "reported"
    # Kubernetes machinery with no meaning outside a cluster (cluster IPs,
    # node ports, cloud load balancers): accepted without a word.
    INERT = "inert"


@dataclass(frozen=True, slots=True)
class Field:
    support: Support
    # Values sailplane always behaves as: setting one changes nothing, so it
    # is not reported (a list value is written as a tuple).
    harmless: tuple[object, ...] = ()


IMPLEMENTED = Field(Support.IMPLEMENTED)
UNSUPPORTED = Field(Support.UNSUPPORTED)
REJECTED = Field(Support.REJECTED)
REPORTED = Field(Support.REPORTED)
INERT = Field(Support.INERT)


def unsupported_unless(*harmless: object) -> Field:
    return Field(Support.UNSUPPORTED, harmless)


@dataclass(frozen=True, slots=True)
class KindFields:
    kind: str
    fields: Mapping[str, Field]
    # How an unknown field (a typo) is reported: an error where losing a
    # setting is unsafe (security policies), else a warning.
    unknown: Severity = Severity.WARNING


Fields = dict[str, Field]


def at(prefix: str, fragment: Mapping[str, Field]) -> Fields:
    """The implemented message field ``prefix`` and, under it, ``fragment``."""
    return {prefix: IMPLEMENTED, **{f"{prefix}.{path}": field for path, field in fragment.items()}}


def every(status: Field, *paths: str) -> Fields:
    return dict.fromkeys(paths, status)


# -- shared messages ---------------------------------------------------------

STRING_MATCH = every(IMPLEMENTED, "exact", "prefix", "regex")
PERCENT = every(IMPLEMENTED, "value")
PORT_SELECTOR = every(IMPLEMENTED, "number")
DESTINATION = {**every(IMPLEMENTED, "host", "subset"), **at("port", PORT_SELECTOR)}
HEADER_OPERATIONS = every(IMPLEMENTED, "set", "add", "remove")
HEADERS = {**at("request", HEADER_OPERATIONS), **at("response", HEADER_OPERATIONS)}
MATCH_LABELS = every(IMPLEMENTED, "matchLabels")


def frozen(kind: str, fields: Fields, unknown: Severity = Severity.WARNING) -> KindFields:
    return KindFields(kind, MappingProxyType(dict(sorted(fields.items()))), unknown)
