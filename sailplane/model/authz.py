"""Istio's AuthorizationPolicy (security.istio.io/v1) as typed values.

Semantics: istio.io/latest/docs/reference/config/security/authorization-policy.
Within a rule, ``from``, ``to`` and ``when`` are ANDed; the entries of a
``from`` (or ``to``) list are ORed; the fields of one source (or operation)
are ANDed; the values of one field are ORed. Evaluation: CUSTOM, then DENY,
then ALLOW (no ALLOW policy = allow; ALLOW policies that all miss = deny).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sailplane.model.source import Source

Action = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]
CLAIMS_KEY = "request.auth.claims"
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
    # JWT principals, ``ISSUER/SUBJECT`` (RequestAuthentication validates the token).
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        return bool(self.request_principals or self.not_request_principals)


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
    key: str  # request.headers[x-user], request.auth.claims[groups], source.ip, ...
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
    # ``istio.io/dry-run: "true"``: evaluated and counted (RBAC shadow rules),
    # never enforced.
    dry_run: bool = False
    # Gateway API / waypoint targets (``targetRef(s)``): the policy applies to
    # those only, which sailplane does not run, so to no workload at all.
    target_refs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def claim_path(key: str) -> tuple[str, ...] | None:
    """``request.auth.claims[a][b]`` -> ``("a", "b")``, as Istio reads it
    (authz/model extractNameInNestedBrackets: a key that is not a clean
    sequence of ``[NAME]`` is one claim, everything between the outer
    brackets); None when it is not ``request.auth.claims[NAME]`` at all."""
    rest = key.removeprefix(CLAIMS_KEY)
    if rest == key or not rest.startswith("[") or not rest.endswith("]") or len(rest) < 3:
        return None
    names = re.findall(r"\[([^\[\]]*)\]", rest)
    if "".join(f"[{n}]" for n in names) == rest and all(names):
        return tuple(names)
    return (rest[1:-1],)
