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

JWT attributes (``requestPrincipals``, ``request.auth.*``) are matched on the
payload that the ``jwt_authn`` filter before RBAC verified (translate/jwt.py),
with Istio's matchers (authz/model/generator.go). A dry-run policy
(``istio.io/dry-run``) goes into the shadow rules: evaluated and counted
(``http.PREFIX.rbac.istio_dry_run_deny_.shadow_denied``), never enforced.

HTTP policies travel in the route configuration, not the listener: the HTTP
connection manager always has the same three RBAC filters, without rules,
and each route configuration turns them on per route (``RBACPerRoute``,
keyed by filter name). A policy change is then an RDS-only push, which
Envoy applies to the next request of every connection, where a listener
change would leave existing connections on the old filter chain until
they drain (600 s by default).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

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

from sailplane.model.authz import (
    AuthorizationPolicy,
    Condition,
    Operation,
    Rule,
    Source_,
)
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.translate.common import pack
from sailplane.translate.jwt import jwt_condition, request_principals
from sailplane.translate.rbac_values import (
    all_of,
    all_of_ids,
    any_of,
    any_of_ids,
    cidr,
    glob,
    id_values,
    negate,
    negate_ids,
    workload_policies,
)

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
# Istio's shadow stat prefixes (authz/model RBACShadowRules*StatPrefix): the
# counters of dry-run policies, http.PREFIX.rbac.istio_dry_run_deny_.shadow_denied.
SHADOW_STAT_PREFIXES = {"DENY": "istio_dry_run_deny_", "ALLOW": "istio_dry_run_allow_"}


def policies_for(mesh: MeshConfig, workload: Workload) -> list[AuthorizationPolicy]:
    """Policies that apply to ``workload``: mesh-wide (root namespace),
    namespace-wide, and those whose selector matches it."""
    return workload_policies(mesh.authorization_policies, mesh.root_namespace, workload)


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


# -- sources and operations -----------------------------------------------


def _source_principal(source: Source_, http: bool = True) -> rbac_pb2.Principal:
    parts: list[rbac_pb2.Principal] = []
    if http:  # on TCP, HTTP-only fields: see rule_policy
        if source.request_principals:
            parts.append(request_principals(source.request_principals))
        if source.not_request_principals:
            parts.append(
                rbac_pb2.Principal(not_id=request_principals(source.not_request_principals))
            )
    pairs: list[tuple[Iterable[str], bool, object]] = [
        (source.principals, False, _principal),
        (source.not_principals, True, _principal),
        (source.namespaces, False, _namespace),
        (source.not_namespaces, True, _namespace),
        (source.ip_blocks, False, lambda b: rbac_pb2.Principal(direct_remote_ip=cidr(b))),
        (source.not_ip_blocks, True, lambda b: rbac_pb2.Principal(direct_remote_ip=cidr(b))),
        (source.remote_ip_blocks, False, lambda b: rbac_pb2.Principal(remote_ip=cidr(b))),
        (source.not_remote_ip_blocks, True, lambda b: rbac_pb2.Principal(remote_ip=cidr(b))),
    ]
    for values, negated, make in pairs:
        ids = [make(v) for v in values]  # type: ignore[operator]
        if ids:
            parts.append(negate_ids(ids) if negated else any_of_ids(ids))
    return all_of_ids(parts)


def _host(value: str) -> rbac_pb2.Permission:
    # Hosts match the authority with or without a port, case-insensitively.
    with_port = glob(value + ":*" if not value.endswith("*") else value, ignore_case=True)
    return any_of(
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
    for values, negated, make, http_only in fields:
        if http_only and not http:
            continue
        perms = [make(v) for v in values]  # type: ignore[operator]
        if perms:
            parts.append(negate(perms) if negated else any_of(perms))
    return all_of(parts)


def _perm_values(
    cond: Condition, make: Callable[[str], rbac_pb2.Permission]
) -> rbac_pb2.Permission:
    parts = []
    if cond.values:
        parts.append(any_of([make(v) for v in cond.values]))
    if cond.not_values:
        parts.append(negate([make(v) for v in cond.not_values]))
    return all_of(parts)


def _id_values(cond: Condition, make: Callable[[str], rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return id_values(cond, lambda values: any_of_ids([make(v) for v in values]))


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
        return _perm_values(cond, lambda v: rbac_pb2.Permission(destination_ip=cidr(v))), None
    makers: dict[str, Callable[[str], rbac_pb2.Principal]] = {
        "source.ip": lambda v: rbac_pb2.Principal(direct_remote_ip=cidr(v)),
        "remote.ip": lambda v: rbac_pb2.Principal(remote_ip=cidr(v)),
        "source.namespace": _namespace,
        "source.principal": _principal,
    }
    if cond.key.startswith("request.auth."):
        return None, jwt_condition(cond)
    return None, _id_values(cond, makers[cond.key])


def rule_policy(rule: Rule, http: bool, action: str) -> rbac_pb2.Policy | None:
    """One Istio rule as an RBAC policy; None when it can never match here."""
    needs_http = (
        any(o.http_only for o in rule.operations)
        or any(c.http_only for c in rule.conditions)
        or any(s.http_only for s in rule.sources)
    )
    if needs_http and not http and action == "ALLOW":
        return None
    permissions = (
        [any_of([_operation_permission(o, http) for o in rule.operations])]
        if rule.operations
        else []
    )
    principals = (
        [any_of_ids([_source_principal(s, http) for s in rule.sources])] if rule.sources else []
    )
    for cond in rule.conditions:
        if cond.http_only and not http:
            continue
        perm, principal = _condition(cond)
        if perm is not None:
            permissions.append(perm)
        if principal is not None:
            principals.append(principal)
    return rbac_pb2.Policy(permissions=[all_of(permissions)], principals=[all_of_ids(principals)])


def rbac_rules(
    policies: list[AuthorizationPolicy],
    action: str,
    http: bool,
    readable: Callable[[Rule], Rule | None] | None = None,
) -> rbac_pb2.RBAC:
    """The RBAC rules of one action over ``policies`` (all of that action).
    ``readable``: what of a rule the client can evaluate (None: leave it out),
    for a client that reads less than Envoy (proxyless gRPC)."""
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
            kept = readable(rule) if readable is not None else rule
            built = rule_policy(kept, http, action) if kept is not None else None
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


def _split_dry_run(
    policies: list[AuthorizationPolicy],
) -> tuple[list[AuthorizationPolicy], list[AuthorizationPolicy]]:
    """(enforced, dry run): Istio's builder puts dry-run policies in the
    shadow rules, and leaves ``rules`` unset when every policy is dry run,
    so that nothing is enforced (authz/builder build)."""
    return [p for p in policies if not p.dry_run], [p for p in policies if p.dry_run]


def http_rbac_filters() -> list[hcm_pb2.HttpFilter]:
    """The RBAC filters of every HTTP connection manager that enforces policy:
    DENY, ALLOW, AUDIT. Without rules they enforce nothing; routes turn them
    on (:func:`http_rbac_per_route`). The same bytes whatever the policies,
    so a policy change never changes a listener."""
    return [
        hcm_pb2.HttpFilter(
            name=name,
            # Per-action counters: http.<prefix>.rbac.deny.denied, ...; a
            # route's shadow rules count with the filter's shadow prefix.
            typed_config=pack(
                http_rbac_pb2.RBAC(
                    rules_stat_prefix=f"{action.lower()}.",
                    shadow_rules_stat_prefix=SHADOW_STAT_PREFIXES.get(action, ""),
                )
            ),
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
        enforced, dry_run = _split_dry_run(members)
        rules = rbac_rules(enforced, action, http=True)
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
        config = http_rbac_pb2.RBAC()
        if rules.policies or enforced:
            config.rules.CopyFrom(rules)
        if dry_run:
            config.shadow_rules.CopyFrom(rbac_rules(dry_run, action, http=True))
        if config.HasField("rules") or config.HasField("shadow_rules"):
            out[RBAC_FILTERS[action]] = pack(http_rbac_pb2.RBACPerRoute(rbac=config))
    return out


def network_rbac_filters(
    policies: list[AuthorizationPolicy], stat_prefix: str
) -> list[listener_components_pb2.Filter]:
    out = []
    for action, members in _grouped(policies).items():
        if not members:
            continue
        enforced, dry_run = _split_dry_run(members)
        config = network_rbac_pb2.RBAC(stat_prefix=f"{stat_prefix}.{action.lower()}.")
        if enforced:
            config.rules.CopyFrom(rbac_rules(enforced, action, http=False))
        if dry_run:
            config.shadow_rules.CopyFrom(rbac_rules(dry_run, action, http=False))
            config.shadow_rules_stat_prefix = SHADOW_STAT_PREFIXES.get(action, "")
        out.append(
            listener_components_pb2.Filter(
                name="envoy.filters.network.rbac", typed_config=pack(config)
            )
        )
    return out
