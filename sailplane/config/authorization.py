"""Parse ``AuthorizationPolicy`` (istio.io/latest/docs/reference/config/security/
authorization-policy).

A policy with errors never turns into allow-all: it is returned with
``fail_closed`` set, so it denies everything it selects until it is fixed
(the diagnostics say where). That is safer than dropping it, which could
remove the only ALLOW policy of a workload, or a DENY.
"""

from __future__ import annotations

import ipaddress

from sailplane.config.fieldcheck import check_declared_fields
from sailplane.config.reader import ObjectReader, did_you_mean
from sailplane.model.authz import (
    ACTIONS,
    CLAIMS_KEY,
    AuthorizationPolicy,
    Condition,
    Operation,
    Rule,
    Source_,
    claim_path,
)
from sailplane.model.source import FieldPath, Severity

_SOURCE_FIELDS = {
    "principals": "principals",
    "notPrincipals": "not_principals",
    "namespaces": "namespaces",
    "notNamespaces": "not_namespaces",
    "ipBlocks": "ip_blocks",
    "notIpBlocks": "not_ip_blocks",
    "remoteIpBlocks": "remote_ip_blocks",
    "notRemoteIpBlocks": "not_remote_ip_blocks",
    "requestPrincipals": "request_principals",
    "notRequestPrincipals": "not_request_principals",
}
_OPERATION_FIELDS = {
    "hosts": "hosts",
    "notHosts": "not_hosts",
    "ports": "ports",
    "notPorts": "not_ports",
    "methods": "methods",
    "notMethods": "not_methods",
    "paths": "paths",
    "notPaths": "not_paths",
}
_CONDITION_KEYS = (
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.port",
    "destination.ip",
)
# JWT attributes (RequestAuthentication puts the token's claims in Envoy's
# dynamic metadata); Istio's pkg/config/security ValidateAttribute.
_JWT_KEYS = ("request.auth.principal", "request.auth.audiences", "request.auth.presenter")
_DRY_RUN = "istio.io/dry-run"
# Go's strconv.ParseBool, which Istio reads the dry-run annotation with.
_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
# What a targetRef may name (Istio's allowedTargetRefs): (group, kind).
_TARGET_KINDS = {
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
}


def _strings(r: ObjectReader, path: FieldPath) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(r.sequence(path)):
        if isinstance(item, (dict, list)) or item is None:
            r.report((*path, i), "must be a string", code="IST0106")
            continue
        out.append(str(item))
    return tuple(out)


def _check_principal(r: ObjectReader, path: FieldPath, values: tuple[str, ...]) -> None:
    for i, value in enumerate(values):
        if value.startswith("spiffe://"):
            r.report(
                (*path, i),
                f"principal {value!r} must not start with spiffe:// (Istio "
                "writes TRUST_DOMAIN/ns/NS/sa/SA)",
                code="IST0106",
            )
        elif (
            value != "*"
            and not value.startswith("*")
            and not value.endswith("*")
            and ("/ns/" not in value or "/sa/" not in value)
        ):
            r.report(
                (*path, i),
                f"malformed principal {value!r}; expected "
                "TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT",
                code="IST0106",
            )


def _check_cidrs(r: ObjectReader, path: FieldPath, values: tuple[str, ...]) -> None:
    for i, value in enumerate(values):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            r.report((*path, i), f"{value!r} is not an IP address or CIDR block", code="IST0106")


def _check_not_empty(r: ObjectReader, path: FieldPath, values: tuple[str, ...]) -> None:
    for i, value in enumerate(values):
        if not value:
            r.report((*path, i), "empty value not allowed", code="IST0106")


def _source(r: ObjectReader, path: FieldPath) -> Source_:
    values = {attr: _strings(r, (*path, key)) for key, attr in _SOURCE_FIELDS.items()}
    for key in ("requestPrincipals", "notRequestPrincipals"):
        _check_not_empty(r, (*path, key), values[_SOURCE_FIELDS[key]])
    for key in ("principals", "notPrincipals"):
        _check_principal(r, (*path, key), values[_SOURCE_FIELDS[key]])
    for key in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
        _check_cidrs(r, (*path, key), values[_SOURCE_FIELDS[key]])
    return Source_(**values)


def _operation(r: ObjectReader, path: FieldPath) -> Operation:
    values: dict[str, tuple[str, ...] | tuple[int, ...]] = {}
    for key, attr in _OPERATION_FIELDS.items():
        found = _strings(r, (*path, key))
        if key in ("ports", "notPorts"):
            ports = []
            for i, value in enumerate(found):
                if not value.isdigit() or not 0 < int(value) < 65536:
                    r.report((*path, key, i), f"{value!r} is not a port", code="IST0106")
                else:
                    ports.append(int(value))
            values[attr] = tuple(ports)
        else:
            values[attr] = found
    return Operation(**values)  # type: ignore[arg-type]


def _condition(r: ObjectReader, path: FieldPath) -> Condition | None:
    key = r.string((*path, "key"), required=True)
    values = _strings(r, (*path, "values"))
    not_values = _strings(r, (*path, "notValues"))
    if key is None:
        return None
    if (
        not (key.startswith("request.headers[") and key.endswith("]"))
        and key not in _CONDITION_KEYS
        and key not in _JWT_KEYS
        and claim_path(key) is None
    ):
        known = (*_CONDITION_KEYS, *_JWT_KEYS)
        r.report(
            (*path, "key"),
            f"unsupported condition key {key!r}{did_you_mean(key, known)}; supported: "
            f"request.headers[NAME], {', '.join(_CONDITION_KEYS)}, {CLAIMS_KEY}[NAME], "
            "request.auth.principal|audiences|presenter",
            code="IST0106",
        )
        return None
    if key.startswith("request.auth."):
        _check_not_empty(r, (*path, "values"), values)
        _check_not_empty(r, (*path, "notValues"), not_values)
    if not values and not not_values:
        r.report(path, "a condition needs values or notValues", code="IST0106")
    if key in ("source.ip", "remote.ip", "destination.ip"):
        _check_cidrs(r, (*path, "values"), values)
        _check_cidrs(r, (*path, "notValues"), not_values)
    if key == "source.principal":
        _check_principal(r, (*path, "values"), values)
    return Condition(key, values, not_values)


def target_refs(r: ObjectReader) -> tuple[str, ...]:
    """``spec.targetRef`` / ``spec.targetRefs`` as ``Kind/name``, checked as
    Istio validates them (pkg/config/validation validatePolicyTargetReference,
    validateOneOfSelectorType), with a warning: a policy with targets
    applies to those only (a Gateway API gateway, a waypoint), which
    sailplane does not run, so to no workload here."""
    paths: list[FieldPath] = []
    if r.has(("spec", "targetRef")):
        paths.append(("spec", "targetRef"))
    paths.extend(
        ("spec", "targetRefs", i) for i, _ in enumerate(r.sequence(("spec", "targetRefs")))
    )
    if not paths:
        return ()
    if r.has(("spec", "selector")):
        r.report(
            ("spec", "selector"),
            "only one of targetRefs or selector can be set",
            code="IST0106",
        )
    refs = []
    for path in paths:
        kind = r.string((*path, "kind"), required=True) or ""
        name = r.string((*path, "name"), required=True) or ""
        group = r.string((*path, "group")) or "core"
        if r.has((*path, "namespace")):
            r.report(
                (*path, "namespace"),
                "targetRef namespace must not be set; cross namespace referencing is not supported",
                code="IST0106",
            )
        if kind and (group, kind) not in _TARGET_KINDS:
            r.report(
                (*path, "kind"),
                f"targetRef must name a Gateway or GatewayClass "
                f"(gateway.networking.k8s.io), a Service or a ServiceEntry; not {group}/{kind}",
                code="IST0106",
            )
        refs.append(f"{kind}/{name}")
    r.report(
        paths[0][:2],
        f"this policy applies only to {', '.join(refs)} (Gateway API gateways and "
        "waypoints), which sailplane does not run: it applies to no workload here",
        Severity.WARNING,
    )
    return tuple(refs)


def _dry_run(r: ObjectReader, action: str) -> bool:
    """``istio.io/dry-run`` as Istio's checkDryRunAnnotation reads it."""
    path: FieldPath = ("metadata", "annotations", _DRY_RUN)
    if not r.has(path):
        return False
    value = _BOOLS.get(str(r.raw(path)))
    if value is None:
        r.report(
            path,
            f"{_DRY_RUN} must be true or false, not {str(r.raw(path))!r}",
            code="IST0106",
        )
        return False
    if action not in ("ALLOW", "DENY"):
        r.report(
            path,
            f"{_DRY_RUN} supports action ALLOW or DENY only, not {action}",
            code="IST0106",
        )
        return False
    return value


def parse_authorization_policy(r: ObjectReader) -> AuthorizationPolicy:
    check_declared_fields(r)
    refs = target_refs(r)
    action = r.enum(("spec", "action"), ACTIONS, "ALLOW")
    dry_run = _dry_run(r, action)
    if action == "CUSTOM":
        r.report(
            ("spec", "action"),
            "CUSTOM (external authorization) is not supported yet",
            code="IST0106",
        )
    selector = r.labels(("spec", "selector", "matchLabels"))
    rules = []
    for i, _ in enumerate(r.sequence(("spec", "rules"))):
        base = ("spec", "rules", i)
        sources = [
            _source(r, (*base, "from", j, "source"))
            for j, _ in enumerate(r.sequence((*base, "from")))
        ]
        operations = [
            _operation(r, (*base, "to", j, "operation"))
            for j, _ in enumerate(r.sequence((*base, "to")))
        ]
        conditions = [
            c
            for j, _ in enumerate(r.sequence((*base, "when")))
            if (c := _condition(r, (*base, "when", j))) is not None
        ]
        rules.append(Rule(tuple(sources), tuple(operations), tuple(conditions)))
    if r.failed and not refs:
        r.report(
            ("metadata", "name"),
            "this policy has errors: it denies every request to the "
            "workloads it selects until it is fixed"
            + (" (in dry run: counted, not enforced)" if dry_run else ""),
            Severity.WARNING,
        )
    return AuthorizationPolicy(
        name=r.name,
        namespace=r.namespace,
        source=r.source,
        action=action if action != "CUSTOM" else "DENY",
        selector=selector,
        rules=tuple(rules),
        fail_closed=r.failed,
        dry_run=dry_run,
        target_refs=refs,
    )
