"""AuthorizationPolicy -> Envoy RBAC filters on a workload's inbound side.

As Istio (istio.io/latest/docs/concepts/security/#authorization): one RBAC
filter per action, DENY before ALLOW; AUDIT becomes an RBAC filter in LOG
mode. No ALLOW policy means no ALLOW filter (everything allowed); an ALLOW
policy with no rules (``spec: {}``) matches nothing, so it denies all.
Principals are matched against the peer certificate's SPIFFE URI (Istio
writes them without ``spiffe://``); namespaces against its ``/ns/NS/`` part.

For plain TCP ports (network RBAC) HTTP-only fields cannot be evaluated: as
Istio does, an ALLOW rule that needs them never matches, and a DENY rule
ignores them (denying more, never less).

HTTP policies travel in the route configuration, not the listener: the HTTP
connection manager always has the same three RBAC filters, without rules,
and each route configuration turns them on per route (``RBACPerRoute``,
keyed by filter name). A policy change is then an RDS-only push, which
Envoy applies to the next request of every connection, where a listener
change would leave existing connections on the old filter chain until
they drain (600 s by default).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2

from sailplane.model.authz import AuthorizationPolicy, Condition, Operation, Rule, Source_
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload, selector_matches
from sailplane.translate.common import pack

_ACTIONS = {"DENY": rbac_pb2.RBAC.DENY, "ALLOW": rbac_pb2.RBAC.ALLOW, "AUDIT": rbac_pb2.RBAC.LOG}
# One HTTP RBAC filter per action, in Istio's order. Envoy finds a route's
# typed_per_filter_config by the HttpFilter's name, so each name is distinct
# and never the extension's own name (Envoy falls back to that one for every
# RBAC filter that has no entry of its own).
RBAC_FILTERS = {
    "DENY": "envoy.filters.http.rbac.deny",
    "ALLOW": "envoy.filters.http.rbac.allow",
    "AUDIT": "envoy.filters.http.rbac.audit",
}
STRICT_MTLS_RULE = "peer-authentication-strict"
_HEADER_KEY = re.compile(r"^request\.headers\[(.+)\]$")


def policies_for(mesh: MeshConfig, workload: Workload) -> list[AuthorizationPolicy]:
    """Policies that apply to ``workload``: mesh-wide (root namespace),
    namespace-wide, and those whose selector matches it."""
    out = []
    for policy in mesh.authorization_policies:
        if policy.namespace == mesh.root_namespace:
            pass  # mesh-wide: every namespace (a selector still narrows it)
        elif policy.namespace != workload.namespace:
            continue
        if policy.selector and not selector_matches(policy.selector, workload.labels):
            continue
        out.append(policy)
    return out


# -- values ----------------------------------------------------------------


def glob(value: str, ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's value syntax: ``*`` anything, ``abc*`` prefix, ``*abc`` suffix."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=value, ignore_case=ignore_case)


def _cidr(block: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(block, strict=False)
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address), prefix_len={"value": network.prefixlen}
    )


def _any_of_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))


def _all_of_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not ids:
        return rbac_pb2.Principal(any=True)
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def _any_of(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return (
        perms[0]
        if len(perms) == 1
        else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=perms))
    )


def _all_of(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not perms:
        return rbac_pb2.Permission(any=True)
    return (
        perms[0]
        if len(perms) == 1
        else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=perms))
    )


def _principal(value: str) -> rbac_pb2.Principal:
    if value == "*":
        matcher = glob("*")
    else:
        matcher = glob(value if value.startswith("*") else f"spiffe://{value}")
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher)
    )


def _namespace(value: str) -> rbac_pb2.Principal:
    escaped = ".+" if value == "*" else re.escape(value)
    regex = f"spiffe://.+/ns/{escaped}/.+"
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))
        )
    )


def _negate_ids(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=_any_of_ids(ids))


def _negate(perms: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=_any_of(perms))


# -- sources and operations -----------------------------------------------


def _source_principal(source: Source_) -> rbac_pb2.Principal:
    parts: list[rbac_pb2.Principal] = []
    pairs: list[tuple[Iterable[str], bool, object]] = [
        (source.principals, False, _principal),
        (source.not_principals, True, _principal),
        (source.namespaces, False, _namespace),
        (source.not_namespaces, True, _namespace),
        (source.ip_blocks, False, lambda b: rbac_pb2.Principal(direct_remote_ip=_cidr(b))),
        (source.not_ip_blocks, True, lambda b: rbac_pb2.Principal(direct_remote_ip=_cidr(b))),
        (source.remote_ip_blocks, False, lambda b: rbac_pb2.Principal(remote_ip=_cidr(b))),
        (source.not_remote_ip_blocks, True, lambda b: rbac_pb2.Principal(remote_ip=_cidr(b))),
    ]
    for values, negate, make in pairs:
        ids = [make(v) for v in values]  # type: ignore[operator]
        if ids:
            parts.append(_negate_ids(ids) if negate else _any_of_ids(ids))
    return _all_of_ids(parts)


def _host(value: str) -> rbac_pb2.Permission:
    # Hosts match the authority with or without a port, case-insensitively.
    with_port = glob(value + ":*" if not value.endswith("*") else value, ignore_case=True)
    return _any_of(
        [
            rbac_pb2.Permission(
                header=rc.HeaderMatcher(
                    name=":authority", string_match=glob(value, ignore_case=True)
                )
            ),
            rbac_pb2.Permission(header=rc.HeaderMatcher(name=":authority", string_match=with_port)),
        ]
    )


def _path(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=glob(value)))


def _method(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=rc.HeaderMatcher(name=":method", string_match=glob(value)))


def _port(value: int) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_port=value)


def _operation_permission(op: Operation, http: bool) -> rbac_pb2.Permission:
    parts: list[rbac_pb2.Permission] = []
    fields: list[tuple[Iterable[object], bool, object, bool]] = [
        (op.hosts, False, _host, True),
        (op.not_hosts, True, _host, True),
        (op.ports, False, _port, False),
        (op.not_ports, True, _port, False),
        (op.methods, False, _method, True),
        (op.not_methods, True, _method, True),
        (op.paths, False, _path, True),
        (op.not_paths, True, _path, True),
    ]
    for values, negate, make, http_only in fields:
        if http_only and not http:
            continue
        perms = [make(v) for v in values]  # type: ignore[operator]
        if perms:
            parts.append(_negate(perms) if negate else _any_of(perms))
    return _all_of(parts)


def _perm_values(
    cond: Condition, make: Callable[[str], rbac_pb2.Permission]
) -> rbac_pb2.Permission:
    parts = []
    if cond.values:
        parts.append(_any_of([make(v) for v in cond.values]))
    if cond.not_values:
        parts.append(_negate([make(v) for v in cond.not_values]))
    return _all_of(parts)


def _id_values(cond: Condition, make: Callable[[str], rbac_pb2.Principal]) -> rbac_pb2.Principal:
    parts = []
    if cond.values:
        parts.append(_any_of_ids([make(v) for v in cond.values]))
    if cond.not_values:
        parts.append(_negate_ids([make(v) for v in cond.not_values]))
    return _all_of_ids(parts)


def _condition(cond: Condition) -> tuple[rbac_pb2.Permission | None, rbac_pb2.Principal | None]:
    """``when`` keys: request and destination attributes are permissions,
    source attributes principals."""
    header = _HEADER_KEY.match(cond.key)
    if header:
        name = header.group(1).lower()
        return _perm_values(
            cond,
            lambda v: rbac_pb2.Permission(header=rc.HeaderMatcher(name=name, string_match=glob(v))),
        ), None
    if cond.key == "destination.port":
        return _perm_values(cond, lambda v: _port(int(v))), None
    if cond.key == "destination.ip":
        return _perm_values(cond, lambda v: rbac_pb2.Permission(destination_ip=_cidr(v))), None
    makers: dict[str, Callable[[str], rbac_pb2.Principal]] = {
        "source.ip": lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v)),
        "remote.ip": lambda v: rbac_pb2.Principal(remote_ip=_cidr(v)),
        "source.namespace": _namespace,
        "source.principal": _principal,
    }
    return None, _id_values(cond, makers[cond.key])


def rule_policy(rule: Rule, http: bool, action: str) -> rbac_pb2.Policy | None:
    """One Istio rule as an RBAC policy; None when it can never match here."""
    needs_http = any(o.http_only for o in rule.operations) or any(
        c.http_only for c in rule.conditions
    )
    if needs_http and not http and action == "ALLOW":
        return None
    permissions = (
        [_any_of([_operation_permission(o, http) for o in rule.operations])]
        if rule.operations
        else []
    )
    principals = [_any_of_ids([_source_principal(s) for s in rule.sources])] if rule.sources else []
    for cond in rule.conditions:
        if cond.http_only and not http:
            continue
        perm, principal = _condition(cond)
        if perm is not None:
            permissions.append(perm)
        if principal is not None:
            principals.append(principal)
    return rbac_pb2.Policy(permissions=[_all_of(permissions)], principals=[_all_of_ids(principals)])


def _rbac(policies: list[AuthorizationPolicy], action: str, http: bool) -> rbac_pb2.RBAC:
    rbac = rbac_pb2.RBAC(action=_ACTIONS[action])
    for policy in policies:
        if policy.fail_closed:
            rbac.policies[f"ns[{policy.namespace}]-policy[{policy.name}]-invalid"].CopyFrom(
                rbac_pb2.Policy(
                    permissions=[rbac_pb2.Permission(any=True)],
                    principals=[rbac_pb2.Principal(any=True)],
                )
            )
            continue
        for index, rule in enumerate(policy.rules):
            built = rule_policy(rule, http, action)
            if built is not None:
                rbac.policies[
                    f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{index}]"
                ].CopyFrom(built)
    return rbac


def _grouped(policies: list[AuthorizationPolicy]) -> dict[str, list[AuthorizationPolicy]]:
    groups: dict[str, list[AuthorizationPolicy]] = {"DENY": [], "ALLOW": [], "AUDIT": []}
    for policy in policies:
        # An invalid policy denies whatever it selects, whatever its action said.
        groups["DENY" if policy.fail_closed else policy.action].append(policy)
    return groups


def http_rbac_filters() -> list[hcm_pb2.HttpFilter]:
    """The RBAC filters of every HTTP connection manager that enforces policy:
    DENY, ALLOW, AUDIT. Without rules they enforce nothing; routes turn them
    on (:func:`http_rbac_per_route`). The same bytes whatever the policies,
    so a policy change never changes a listener."""
    return [
        hcm_pb2.HttpFilter(
            name=name,
            # Per-action counters: http.<prefix>.rbac.deny.denied, ...
            typed_config=pack(http_rbac_pb2.RBAC(rules_stat_prefix=f"{action.lower()}.")),
        )
        for action, name in RBAC_FILTERS.items()
    ]


def http_rbac_per_route(
    policies: list[AuthorizationPolicy], require_mtls: bool = False
) -> dict[str, any_pb2.Any]:
    """``typed_per_filter_config`` for a virtual host: one ``RBACPerRoute``
    per action that has policies (the others stay off). ``require_mtls``
    (PeerAuthentication STRICT) denies any request whose connection has no
    verified peer certificate: a plaintext connection accepted before the
    port became STRICT stays open on its old filter chain until it drains,
    and this refuses its next request."""
    out: dict[str, any_pb2.Any] = {}
    for action, members in _grouped(policies).items():
        rules = _rbac(members, action, http=True)
        if action == "DENY" and require_mtls:
            rules.policies[STRICT_MTLS_RULE].CopyFrom(
                rbac_pb2.Policy(
                    permissions=[rbac_pb2.Permission(any=True)],
                    # `authenticated: {}` matches any TLS peer (STRICT asks for its certificate).
                    principals=[
                        rbac_pb2.Principal(
                            not_id=rbac_pb2.Principal(
                                authenticated=rbac_pb2.Principal.Authenticated()
                            )
                        )
                    ],
                )
            )
        if rules.policies or members:
            config = http_rbac_pb2.RBACPerRoute(rbac=http_rbac_pb2.RBAC(rules=rules))
            out[RBAC_FILTERS[action]] = pack(config)
    return out


def network_rbac_filters(
    policies: list[AuthorizationPolicy], stat_prefix: str
) -> list[listener_components_pb2.Filter]:
    out = []
    for action, members in _grouped(policies).items():
        if not members:
            continue
        config = network_rbac_pb2.RBAC(
            rules=_rbac(members, action, http=False), stat_prefix=f"{stat_prefix}.{action.lower()}."
        )
        out.append(
            listener_components_pb2.Filter(
                name="envoy.filters.network.rbac", typed_config=pack(config)
            )
        )
    return out
