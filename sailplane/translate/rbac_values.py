"""The building blocks of RBAC matchers: Istio's value syntax, CIDR ranges,
and the AND / OR / NOT combinators (one element stays itself, as Istio's
builder writes it). Shared by translate/authz.py and translate/jwt.py."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2


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


def negate_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=any_of_ids(ids))


def negate(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=any_of(perms))
