"""Documents -> :class:`MeshConfig`: parse each object, check the whole.

An object with errors is not used. If the configuration in force (``previous``)
has a valid version of the same object, that version stays in force until the
new one is fixed, as a Kubernetes API server keeps an object whose update its
admission webhook rejected: a typo in a weight must not turn a 90/10 canary
into round robin. Deleting the object (or its file) does remove it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sailplane.config.authorization import parse_authorization_policy
from sailplane.config.checks import check_mesh
from sailplane.config.destinationrule import parse_destination_rule
from sailplane.config.envelope import reader_for
from sailplane.config.gateway import parse_gateway
from sailplane.config.reader import ObjectReader
from sailplane.config.references import check_references
from sailplane.config.registry import parse_service, parse_service_entry, parse_workload_entry
from sailplane.config.security import parse_legacy_policy, parse_peer_authentication
from sailplane.config.sidecar import MESH_CONFIGMAP, parse_mesh_settings, parse_sidecar
from sailplane.config.telemetry import check_telemetry, parse_telemetry
from sailplane.config.virtualservice import parse_virtual_service
from sailplane.config.yamldoc import Document
from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.mesh import MeshConfig, ObjectRef
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
from sailplane.model.registry import Service, Workload
from sailplane.model.security import PeerAuthentication
from sailplane.model.sidecar import MeshSettings, Sidecar
from sailplane.model.source import Diagnostic, Position, Severity
from sailplane.model.telemetry import Telemetry

Key = tuple[str, str, str]  # kind, namespace, name

ACTIVE = "active"  # this version is in force
RETAINED = "retained"  # this version is rejected; the last good one is in force
REJECTED = "rejected"  # has errors; not in force at all
IGNORED = "ignored"  # a kind sailplane does not translate yet


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """One object of the directory and what became of it."""

    kind: str
    namespace: str
    name: str
    file: str  # where the version in force came from (the rejected one if none is)
    line: int
    digest: str  # content hash of that version
    state: str = ACTIVE
    rejected_at: str = ""  # "file:line" of a rejected newer version

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "source": f"{self.file}:{self.line}",
            "state": self.state,
            "digest": self.digest[:12],
        }
        if self.rejected_at:
            out["rejected_version"] = self.rejected_at
        return out


@dataclass(slots=True)
class _Collected:
    services: dict[str, Service] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)
    istio: dict[str, list[Any]] = field(
        default_factory=lambda: {
            "VirtualService": [],
            "DestinationRule": [],
            "Gateway": [],
            "PeerAuthentication": [],
            "AuthorizationPolicy": [],
            "Sidecar": [],
            "Telemetry": [],
        }
    )
    settings: MeshSettings | None = None
    # Invalid AuthorizationPolicies, in their deny-everything form.
    fail_closed: dict[Key, AuthorizationPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InForce:
    """What a new load may fall back to: the mesh in force and its records."""

    mesh: MeshConfig
    records: Mapping[Key, ObjectRecord]


def document_digest(data: Any) -> str:
    def canonical(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): canonical(v) for k, v in value.items()}
        if isinstance(value, list):
            return [canonical(v) for v in value]
        return value

    text = json.dumps(canonical(data), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def build_mesh(
    documents: list[Document], domain_suffix: str, previous: InForce | None = None
) -> tuple[MeshConfig, list[Diagnostic], list[ObjectRecord]]:
    diagnostics: list[Diagnostic] = []
    found = _Collected()
    records: dict[Key, ObjectRecord] = {}  # the versions in the files
    states: dict[Key, str] = {}  # what became of them, when not ACTIVE
    for doc in documents:
        reader = reader_for(doc, diagnostics)
        if reader is None:
            continue
        key = (reader.kind, reader.namespace, reader.name)
        if key in records:
            first = records[key]
            reader.report(
                ("metadata", "name"),
                f"duplicate {reader.kind} {reader.namespace}/"
                f"{reader.name}; first defined at {first.file}:{first.line}",
            )
            diagnostics.extend(reader.diagnostics)
            continue
        record = ObjectRecord(
            *key, doc.source.file, doc.source.position.line, document_digest(doc.data)
        )
        kept = _parse_object(reader, domain_suffix, found)
        diagnostics.extend(reader.diagnostics)
        if not kept:
            states[key] = REJECTED if reader.failed else IGNORED
            if reader.failed and previous is not None and _retain(key, previous, found):
                states[key] = RETAINED
            elif key in found.fail_closed:
                # A broken security policy with no good version to fall back on
                # denies what it selects rather than vanishing (allow-all).
                found.istio["AuthorizationPolicy"].append(found.fail_closed[key])
        records[key] = record
    by_key = lambda o: (o.namespace, o.name)  # noqa: E731
    mesh = MeshConfig(
        services=tuple(sorted(found.services.values(), key=lambda s: s.hostname)),
        workloads=tuple(sorted(found.workloads.values(), key=lambda w: w.id)),
        virtual_services=tuple(sorted(found.istio["VirtualService"], key=by_key)),
        destination_rules=tuple(sorted(found.istio["DestinationRule"], key=by_key)),
        gateways=tuple(sorted(found.istio["Gateway"], key=by_key)),
        peer_authentications=tuple(sorted(found.istio["PeerAuthentication"], key=by_key)),
        authorization_policies=tuple(sorted(found.istio["AuthorizationPolicy"], key=by_key)),
        sidecars=tuple(sorted(found.istio["Sidecar"], key=by_key)),
        telemetries=tuple(sorted(found.istio["Telemetry"], key=by_key)),
        settings=found.settings or MeshSettings(),
        root_namespace=(found.settings or MeshSettings()).root_namespace,
        domain_suffix=domain_suffix,
    )
    # Cross-object checks need every object; what fails them is dropped, or
    # falls back to its last good version.
    fallback = {vs.key: vs for vs in previous.mesh.virtual_services} if previous else {}
    mesh, dropped, retained, problems = check_references(mesh, fallback)
    diagnostics.extend(problems)
    states.update((key, REJECTED) for key in dropped)
    states.update((key, RETAINED) for key in retained)
    final = [_with_state(r, states.get(r.key, ACTIVE), previous) for r in records.values()]
    diagnostics.extend(_retained_note(r) for r in final if r.state == RETAINED)
    diagnostics.extend(check_mesh(mesh))
    diagnostics.extend(check_telemetry(mesh))
    in_force = [
        ObjectRef(r.kind, r.namespace, r.name, r.file, r.line)
        for r in final
        if r.state in (ACTIVE, RETAINED)
    ]
    mesh = dataclasses.replace(mesh, objects=tuple(in_force))
    return mesh, diagnostics, final


def _with_state(record: ObjectRecord, state: str, previous: InForce | None) -> ObjectRecord:
    """The record of the version in the files, or, for a retained object, of
    the last good version in force (naming the rejected one)."""
    if state != RETAINED:
        return dataclasses.replace(record, state=state)
    assert previous is not None
    old = previous.records[record.key]
    return dataclasses.replace(old, state=RETAINED, rejected_at=f"{record.file}:{record.line}")


def _retained_note(record: ObjectRecord) -> Diagnostic:
    file, _, line = record.rejected_at.rpartition(":")
    return Diagnostic(
        file,
        Position(int(line), 1),
        f"this version is rejected; the last good version ({record.file}:{record.line}) "
        "stays in force until it is fixed",
        obj=f"{record.kind} {record.namespace}/{record.name}",
        severity=Severity.WARNING,
    )


def _retain(key: Key, previous: InForce, found: _Collected) -> bool:
    """Put the previous version of a failed object back; whether there was one."""
    old = previous.records.get(key)
    if old is None or old.state not in (ACTIVE, RETAINED):
        return False
    kind, namespace, name = key
    mesh = previous.mesh
    if kind in found.istio or kind == "Policy":
        items: tuple[Any, ...] = {
            "VirtualService": mesh.virtual_services,
            "DestinationRule": mesh.destination_rules,
            "Gateway": mesh.gateways,
            "PeerAuthentication": tuple(p for p in mesh.peer_authentications if not p.legacy),
            "Policy": tuple(p for p in mesh.peer_authentications if p.legacy),
            "AuthorizationPolicy": tuple(
                p for p in mesh.authorization_policies if not p.fail_closed
            ),
            "Sidecar": mesh.sidecars,
            "Telemetry": mesh.telemetries,
        }[kind]
        matches = [o for o in items if (o.namespace, o.name) == (namespace, name)]
        found.istio["PeerAuthentication" if kind == "Policy" else kind].extend(matches)
        return bool(matches)
    added = False
    if kind == "WorkloadEntry":
        for workload in mesh.workloads:
            if (workload.namespace, workload.name) == (namespace, name):
                added |= found.workloads.setdefault(workload.id, workload) is workload
        return added
    for service in mesh.services:
        if (service.kind, service.namespace, service.name) == key:
            added |= found.services.setdefault(service.hostname, service) is service
    return added


def _parse_object(reader: ObjectReader, domain_suffix: str, found: _Collected) -> bool:
    """Add the object to the collections; False when it was dropped."""
    kind = reader.kind
    parsed: (
        VirtualService
        | DestinationRule
        | Gateway
        | PeerAuthentication
        | AuthorizationPolicy
        | Sidecar
        | Telemetry
        | Service
        | None
    )
    if kind in found.istio or kind == "Policy":
        if kind == "VirtualService":
            parsed = parse_virtual_service(reader, domain_suffix)
        elif kind == "DestinationRule":
            parsed = parse_destination_rule(reader, domain_suffix)
        elif kind == "Gateway":
            parsed = parse_gateway(reader)
        elif kind == "PeerAuthentication":
            parsed = parse_peer_authentication(reader)
        elif kind == "Sidecar":
            parsed = parse_sidecar(reader)
        elif kind == "Telemetry":
            parsed = parse_telemetry(reader)
        elif kind == "AuthorizationPolicy":
            policy = parse_authorization_policy(reader)
            if policy.fail_closed:
                found.fail_closed[(kind, policy.namespace, policy.name)] = policy
                return False
            parsed = policy
        else:  # the legacy authentication.istio.io Policy becomes a PeerAuthentication
            parsed = parse_legacy_policy(reader)
            kind = "PeerAuthentication"
        if parsed is None:
            return False
        found.istio[kind].append(parsed)
        return True
    if kind == "ConfigMap":
        if (reader.namespace, reader.name) != ("istio-system", MESH_CONFIGMAP):
            return False  # not the mesh settings: ignored
        settings = parse_mesh_settings(reader)
        if settings is None:
            return False
        found.settings = settings
        return True
    if kind == "Service":
        parsed = parse_service(reader, domain_suffix)
        candidates = [parsed] if parsed else []
    elif kind == "ServiceEntry":
        candidates = parse_service_entry(reader, domain_suffix)
    elif kind == "WorkloadEntry":
        workload = parse_workload_entry(reader)
        if workload is None:
            return False
        found.workloads[workload.id] = workload
        return True
    else:
        reader.report(
            ("kind",), f"{kind} is not supported yet by sailplane; ignored", Severity.WARNING
        )
        return False
    for service in candidates:
        other = found.services.get(service.hostname)
        if other is not None:
            reader.report(
                ("spec",),
                f"host {service.hostname} is already defined by {other.kind} "
                f"{other.namespace}/{other.name} ({other.source.file}); ignored",
            )
    if reader.failed:  # all of the object or none of it
        return False
    found.services.update((s.hostname, s) for s in candidates)
    return bool(candidates)
