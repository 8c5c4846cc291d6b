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
from sailplane.model.authz import ACTIONS, AuthorizationPolicy, Condition, Operation, Rule, Source_
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
# JWT: reported here; the other fields are checked against config/fields/, where an
# unknown field of this kind is an error (`rule:` for `rules:` would turn a DENY
# into nothing at all).
_UNSUPPORTED = ("requestPrincipals", "notRequestPrincipals")


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


def _source(r: ObjectReader, path: FieldPath) -> Source_:
    for name in _UNSUPPORTED:
        if r.has((*path, name)):
            r.report((*path, name), f"{name} (JWT) is not supported yet", code="IST0106")
    values = {attr: _strings(r, (*path, key)) for key, attr in _SOURCE_FIELDS.items()}
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
    ):
        r.report(
            (*path, "key"),
            f"unsupported condition key {key!r}{did_you_mean(key, _CONDITION_KEYS)}; supported: "
            f"request.headers[NAME], {', '.join(_CONDITION_KEYS)}",
            code="IST0106",
        )
        return None
    if not values and not not_values:
        r.report(path, "a condition needs values or notValues", code="IST0106")
    if key in ("source.ip", "remote.ip", "destination.ip"):
        _check_cidrs(r, (*path, "values"), values)
        _check_cidrs(r, (*path, "notValues"), not_values)
    if key == "source.principal":
        _check_principal(r, (*path, "values"), values)
    return Condition(key, values, not_values)


def parse_authorization_policy(r: ObjectReader) -> AuthorizationPolicy:
    check_declared_fields(r)
    if r.has(("spec", "targetRef")) or r.has(("spec", "targetRefs")):
        r.report(
            ("spec", "targetRefs"), "targetRefs are not supported; use selector", code="IST0106"
        )
    action = r.enum(("spec", "action"), ACTIONS, "ALLOW")
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
    if r.failed:
        r.report(
            ("metadata", "name"),
            "this policy has errors: it denies every request to the "
            "workloads it selects until it is fixed",
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
    )
