"""What sailplane does with each field of the kinds it reads, as data.

One mapping per kind, from a field's path under ``spec`` to what sailplane
does with it. Paths: ``a.b`` is field ``b`` of message ``a``; ``a[]`` a list
of messages, whose items' fields are ``a[].x``; ``a{}`` a map of messages,
whose values' fields are ``a{}.x``; lists and maps of scalars are leaves.

This is the one source of truth for the fields a parser knows: the kind's
fields are checked against it before the parser reads them (fieldcheck.py),
so a field in no declaration is "unknown" and one declared but not
implemented is reported when set, never silently dropped. The declarations
cover every field of Istio's API: tests/unit/test_field_support.py compares
them with the fields of istio/api's CRD schemas (tests/data/istio-api-fields).

A field counts as implemented only if translation uses it: a value read into
the model that no Envoy resource reflects is not implemented. A declaration
under a field that is not implemented would never be consulted, so there is
none: the whole subtree shares its root's fate.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sailplane.config.fields.core import (
    IMPLEMENTED,
    Field,
    KindFields,
    Support,
    frozen,
)
from sailplane.config.fields.networking import (
    DESTINATION_RULE,
    GATEWAY,
    KUBERNETES_SERVICE,
    SERVICE_ENTRY,
    SIDECAR,
    VIRTUAL_SERVICE,
    WORKLOAD_ENTRY,
)
from sailplane.config.fields.policy import (
    AUTHORIZATION_POLICY,
    LEGACY_POLICY,
    MESH_POLICY,
    PEER_AUTHENTICATION,
    REQUEST_AUTHENTICATION,
    TELEMETRY,
)
from sailplane.model.source import Severity

DECLARED: Mapping[str, KindFields] = MappingProxyType(
    {
        k.kind: k
        for k in (
            frozen("VirtualService", VIRTUAL_SERVICE),
            frozen("DestinationRule", DESTINATION_RULE),
            frozen("Gateway", GATEWAY),
            frozen("ServiceEntry", SERVICE_ENTRY),
            frozen("WorkloadEntry", WORKLOAD_ENTRY),
            frozen("Service", KUBERNETES_SERVICE),
            frozen("Sidecar", SIDECAR),
            frozen("PeerAuthentication", PEER_AUTHENTICATION),
            # `rule:` for `rules:` would otherwise turn a DENY into nothing at all.
            frozen("AuthorizationPolicy", AUTHORIZATION_POLICY, Severity.ERROR),
            # A typo in where tokens are read or which keys verify them is a security bug.
            frozen("RequestAuthentication", REQUEST_AUTHENTICATION, Severity.ERROR),
            frozen("Policy", LEGACY_POLICY),
            frozen("MeshPolicy", MESH_POLICY),
            frozen("Telemetry", TELEMETRY),
        )
    }
)


__all__ = ["DECLARED", "IMPLEMENTED", "Field", "KindFields", "Support"]
