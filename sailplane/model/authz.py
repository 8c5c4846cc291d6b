"""Istio's AuthorizationPolicy (security.istio.io/v1) as typed values.

Semantics: istio.io/latest/docs/reference/config/security/authorization-policy.
Within a rule, ``from``, ``to`` and ``when`` are ANDed; the entries of a
``from`` (or ``to``) list are ORed; the fields of one source (or operation)
are ANDed; the values of one field are ORed. Evaluation: CUSTOM, then DENY,
then ALLOW (no ALLOW policy = allow; ALLOW policies that all miss = deny).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sailplane.model.source import Source

Action = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]
ACTIONS: tuple[Action, ...] = get_args(Action)


@dataclass(frozen=True, slots=True)
class Source_:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        return bool(
            self.hosts
            or self.not_hosts
            or self.methods
            or self.not_methods
            or self.paths
            or self.not_paths
        )


@dataclass(frozen=True, slots=True)
class Condition:
    key: str  # request.headers[x-user], source.ip, source.namespace, ...
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        return self.key.startswith("request.")


@dataclass(frozen=True, slots=True)
class Rule:
    sources: tuple[Source_, ...] = ()  # ``from``
    operations: tuple[Operation, ...] = ()  # ``to``
    conditions: tuple[Condition, ...] = ()  # ``when``


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    source: Source
    action: Action = "ALLOW"  # never CUSTOM: the parser makes it DENY
    selector: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    # Set when the object was invalid: it then denies everything it selects,
    # so a typo in a security policy never opens access.
    fail_closed: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
