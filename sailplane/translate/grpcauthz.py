"""AuthorizationPolicy -> the RBAC HTTP filters of a proxyless gRPC
server's inbound listener (gRFC A41; Istio's grpcgen ``buildRBAC``).

gRPC evaluates RBAC itself, with the rules inline in the filter (no
per-route configs, no shadow rules, no LOG action): a DENY filter
(``envoy.filters.http.rbac.DENY``) before an ALLOW filter
(``envoy.filters.http.rbac``), each built by authz.py's rule builder.
AUDIT and dry-run policies enforce nothing and are left out.

gRPC reads a subset of what Envoy reads, and a rule it cannot read must
fail closed, never open:

- JWT attributes (``requestPrincipals``, ``request.auth.*``) are Envoy
  dynamic metadata, which gRPC treats as empty: its metadata matchers never
  match, and under a NOT always match. gRPC has no JWT filter anyway.
- header matchers of ``grpc-*`` names or ``:scheme`` make gRPC NACK the
  listener (A41), and with it the whole server.

So an ALLOW rule that names any of these is left out (it never allows),
and a DENY rule is kept without them (its other conditions, ANDed, deny
more, never less), as authz.py does for HTTP-only fields on TCP ports. An
ALLOW policy whose rules are all left out still puts the ALLOW filter in,
with no policies: it denies every request, as the policy would in Envoy
for a client that does not match (Istio's grpcgen leaves the filter out,
allowing everything).
"""

from __future__ import annotations

import dataclasses
import re

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from sailplane.model.authz import AuthorizationPolicy, Condition, Rule, Source_
from sailplane.translate.authz import rbac_rules
from sailplane.translate.common import pack

# Istio's names (grpcgen RBACHTTPFilterName, RBACHTTPFilterNameDeny).
GRPC_RBAC_FILTER = "envoy.filters.http.rbac"
GRPC_RBAC_DENY_FILTER = "envoy.filters.http.rbac.DENY"
_HEADER_KEY = re.compile(r"^request\.headers\[(.+)\]$")
_ACTIONS = {"DENY": rbac_pb2.RBAC.DENY, "ALLOW": rbac_pb2.RBAC.ALLOW}


def grpc_readable(cond: Condition) -> bool:
    """Whether gRPC can evaluate a ``when`` condition (see the module docstring)."""
    if cond.key.startswith("request.auth."):
        return False
    header = _HEADER_KEY.match(cond.key)
    if header is None:
        return True
    name = header.group(1).lower()
    return not (name.startswith("grpc-") or name == ":scheme")


def _readable_source(source: Source_) -> Source_:
    return dataclasses.replace(source, request_principals=(), not_request_principals=())


def grpc_rule(rule: Rule, action: str) -> Rule | None:
    """``rule`` as gRPC can evaluate it: unchanged when it can; otherwise
    None for ALLOW (never matches), and for DENY the rule without what gRPC
    cannot read (it matches more)."""
    readable = all(grpc_readable(c) for c in rule.conditions) and not any(
        s.http_only for s in rule.sources
    )
    if readable:
        return rule
    if action == "ALLOW":
        return None
    return Rule(
        sources=tuple(_readable_source(s) for s in rule.sources),
        operations=rule.operations,
        conditions=tuple(c for c in rule.conditions if grpc_readable(c)),
    )


def grpc_rbac(policies: list[AuthorizationPolicy], action: str) -> rbac_pb2.RBAC:
    """The RBAC rules of one action over ``policies``, as gRPC reads them."""
    return rbac_rules(policies, action, http=True, readable=lambda rule: grpc_rule(rule, action))


def grpc_rbac_filters(policies: list[AuthorizationPolicy]) -> list[hcm_pb2.HttpFilter]:
    """DENY then ALLOW, each only when a policy of that action is enforced
    (an invalid policy denies, whatever its action)."""
    enforced = [p for p in policies if not p.dry_run]  # as authz.py: dry run is shadow
    deny = [p for p in enforced if p.fail_closed or p.action == "DENY"]
    allow = [p for p in enforced if not p.fail_closed and p.action == "ALLOW"]
    filters = []
    for action, members, name in (
        ("DENY", deny, GRPC_RBAC_DENY_FILTER),
        ("ALLOW", allow, GRPC_RBAC_FILTER),
    ):
        if members:
            config = http_rbac_pb2.RBAC(rules=grpc_rbac(members, action))
            filters.append(hcm_pb2.HttpFilter(name=name, typed_config=pack(config)))
    return filters
