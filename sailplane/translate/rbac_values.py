"""The building blocks of RBAC matchers: Istio's value syntax, CIDR ranges,
and the AND / OR / NOT combinators (one element stays itself, as Istio's
builder writes it); and which security policies apply to a workload. Shared
by translate/authz.py and translate/jwt.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from sailplane.model.authz import Condition
from sailplane.model.registry import Workload, selector_matches


class _Attached(Protocol):
    """A workload-attached policy: AuthorizationPolicy, RequestAuthentication."""

    @property
    def namespace(self) -> str: ...
    @property
    def selector(self) -> Mapping[str, str]: ...
    @property
    def target_refs(self) -> tuple[str, ...]: ...


P = TypeVar("P", bound=_Attached)


def workload_policies(policies: Iterable[P], root_namespace: str, workload: Workload) -> list[P]:
    """Those of ``policies`` that apply to ``workload``: mesh-wide (the root
    namespace), namespace-wide, and those whose selector matches it (a
    selector narrows a mesh-wide one too). One with ``targetRefs`` (a Gateway
    API gateway or a waypoint) applies to no workload here."""
    return [
        policy
        for policy in policies
        if not policy.target_refs
        and policy.namespace in (root_namespace, workload.namespace)
        and (not policy.selector or selector_matches(policy.selector, workload.labels))
    ]


def glob(value: str, ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's value syntax: ``*`` anything, ``abc*`` prefix, ``*abc`` suffix."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=value, ignore_case=ignore_case)


def cidr(block: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(block, strict=False)
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address), prefix_len={"value": network.prefixlen}
    )


def any_of_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))


def all_of_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not ids:
        return rbac_pb2.Principal(any=True)
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def any_of(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return (
        perms[0]
        if len(perms) == 1
        else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=perms))
    )


def all_of(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not perms:
        return rbac_pb2.Permission(any=True)
    return (
        perms[0]
        if len(perms) == 1
        else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=perms))
    )


def id_values(
    cond: Condition, make: Callable[[tuple[str, ...]], rbac_pb2.Principal]
) -> rbac_pb2.Principal:
    """A ``when`` condition as a principal: ``make`` of its values, and
    not ``make`` of its notValues (either may be absent)."""
    parts = []
    if cond.values:
        parts.append(make(cond.values))
    if cond.not_values:
        parts.append(rbac_pb2.Principal(not_id=make(cond.not_values)))
    return all_of_ids(parts)


def negate_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=any_of_ids(ids))


def negate(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=any_of(perms))
