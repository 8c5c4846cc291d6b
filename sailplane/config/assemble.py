"""Documents -> :class:`MeshConfig`: parse each object, check the whole.

Parsing one object is interpret.py's job (a pure function of its document,
so its result may be cached between loads); everything that involves other
documents happens here, on every load.

An object with errors is not used. If the configuration in force (``previous``)
has a valid version of the same object, that version stays in force until the
new one is fixed, as a Kubernetes API server keeps an object whose update its
admission webhook rejected: a typo in a weight must not turn a 90/10 canary
into round robin. The same holds for a typo that hides what the document is
(kind, apiVersion): interpret.py still names the object when it can. When it
cannot (no metadata.name, a kind like no other), no object is deleted while
such a document is in the directory: every object in force that the load
does not find keeps its last good version ("held"), since the broken
document may be where it lives now. Deleting the object (or its file) from a
directory whose every document says what it is does remove it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sailplane.config.checks import check_mesh
from sailplane.config.envelope import LEGACY_AUTHN_KINDS
from sailplane.config.hostnames import read_namespace_hosts
from sailplane.config.interpret import ISTIO_KINDS, Interpreted, interpret_document
from sailplane.config.records import ACTIVE as ACTIVE
from sailplane.config.records import IGNORED as IGNORED
from sailplane.config.records import REJECTED as REJECTED
from sailplane.config.records import RETAINED as RETAINED
from sailplane.config.records import Key as Key
from sailplane.config.records import ObjectRecord as ObjectRecord
from sailplane.config.records import document_digest as document_digest
from sailplane.config.references import check_references
from sailplane.config.requestauthn import check_request_authentications
from sailplane.config.telemetry import check_telemetry
from sailplane.config.yamldoc import Document
from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.credentials import TLSSecret
from sailplane.model.mesh import MeshConfig, ObjectRef
from sailplane.model.registry import Service, Workload
from sailplane.model.sidecar import MeshSettings
from sailplane.model.source import Diagnostic, Position, Severity


@dataclass(slots=True)
class _Collected:
    services: dict[str, Service] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)
    istio: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in ISTIO_KINDS})
    settings: MeshSettings | None = None
    secrets: dict[Key, TLSSecret] = field(default_factory=dict)
    # Invalid AuthorizationPolicies, in their deny-everything form.
    fail_closed: dict[Key, AuthorizationPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InForce:
    """What a new load may fall back to: the mesh in force and its records."""

    mesh: MeshConfig
    records: Mapping[Key, ObjectRecord]


def build_mesh(
    documents: Sequence[Document], domain_suffix: str, previous: InForce | None = None
) -> tuple[MeshConfig, list[Diagnostic], list[ObjectRecord]]:
    """Interpret every document, then assemble the mesh (see :func:`assemble_mesh`)."""
    interpreted = [interpret_document(doc, domain_suffix) for doc in documents]
    return assemble_mesh(interpreted, domain_suffix, previous)


def assemble_mesh(
    interpreted: Sequence[Interpreted], domain_suffix: str, previous: InForce | None = None
) -> tuple[MeshConfig, list[Diagnostic], list[ObjectRecord]]:
    """The documents' objects, in file order, -> the mesh, its diagnostics and
    the record of every object.

    Only what involves several documents happens here (duplicates, a host
    defined twice, the last good version, the cross-object checks), so the
    interpreted documents may come from a cache: the result is the same."""
    diagnostics: list[Diagnostic] = []
    found = _Collected()
    objects: dict[Key, tuple[ObjectRecord, Interpreted]] = {}  # the versions in the files
    states: dict[Key, str] = {}  # what became of them, when not ACTIVE
    for item in interpreted:
        diagnostics.extend(item.outside)
        record = item.record
        if record is None:
            continue
        key = record.key
        if key in objects:
            first, _ = objects[key]
            reader = item.reader()
            reader.report(
                ("metadata", "name"),
                f"duplicate {reader.kind} {reader.namespace}/"
                f"{reader.name}; first defined at {first.file}:{first.line}",
            )
            diagnostics.extend(reader.diagnostics)
            continue
        kept, failed = _collect(item, found, diagnostics)
        if not kept:
            states[key] = REJECTED if failed else IGNORED
            if failed and previous is not None and _retain(key, previous, found):
                states[key] = RETAINED
            elif key in found.fail_closed:
                # A broken security policy with no good version to fall back on
                # denies what it selects rather than vanishing (allow-all).
                found.istio["AuthorizationPolicy"].append(found.fail_closed[key])
        objects[key] = record, item
    held = _hold_missing(interpreted, objects, previous, found)
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
        request_authentications=tuple(sorted(found.istio["RequestAuthentication"], key=by_key)),
        secrets=tuple(sorted(found.secrets.values(), key=by_key)),
        settings=found.settings or MeshSettings(),
        root_namespace=(found.settings or MeshSettings()).root_namespace,
        domain_suffix=domain_suffix,
    )
    # ``name.ns`` hosts need the mesh's namespaces (hostnames.py).
    mesh, notes = read_namespace_hosts(mesh)
    diagnostics.extend(notes)
    # Cross-object checks need every object; what fails them is dropped, or
    # falls back to its last good version.
    fallback = {vs.key: vs for vs in previous.mesh.virtual_services} if previous else {}
    mesh, dropped, retained, problems = check_references(mesh, fallback)
    diagnostics.extend(problems)
    states.update((key, REJECTED) for key in dropped)
    states.update((key, RETAINED) for key in retained)
    final: list[ObjectRecord] = []
    in_force: list[ObjectRef] = []
    for key, (read, item) in objects.items():
        record = _with_state(read, states.get(key, ACTIVE), previous)
        final.append(record)
        if record is read and item.ref is not None:  # active, as read: its ref is ready-made
            in_force.append(item.ref)
        elif record.state in (ACTIVE, RETAINED):
            in_force.append(
                ObjectRef(record.kind, record.namespace, record.name, record.file, record.line)
            )
    for key, record in held.items():
        if states.get(key, RETAINED) != RETAINED:  # the kept version no longer checks out
            continue
        final.append(record)
        in_force.append(
            ObjectRef(record.kind, record.namespace, record.name, record.file, record.line)
        )
    diagnostics.extend(_retained_note(r) for r in final if r.state == RETAINED)
    # The indexes the checks build on it are carried to the mesh put in
    # force (MeshConfig.with_fields), not built again for translation.
    mesh = mesh.with_fields(objects=tuple(in_force))
    diagnostics.extend(check_mesh(mesh))
    diagnostics.extend(check_telemetry(mesh))
    diagnostics.extend(check_request_authentications(mesh))
    return mesh, diagnostics, final


def _collect(
    item: Interpreted, found: _Collected, diagnostics: list[Diagnostic]
) -> tuple[bool, bool]:
    """Add the document's objects to the collections and report what it
    said. Returns (kept: the object joined the mesh, failed: it has errors);
    an object that is not kept was dropped or is of a kind that adds nothing."""
    if item.role == "registry":
        return _collect_services(item, found, diagnostics)
    diagnostics.extend(item.diagnostics)
    if item.role == "istio":
        if item.fail_closed is not None:
            policy = item.fail_closed
            found.fail_closed[("AuthorizationPolicy", policy.namespace, policy.name)] = policy
            return False, item.failed
        if item.istio is None:
            return False, item.failed
        found.istio[item.istio_kind].append(item.istio)
        return True, item.failed
    if item.role == "settings":
        if item.settings is None:
            return False, item.failed
        found.settings = item.settings
        return True, item.failed
    if item.role == "secret":
        if item.secret is None:
            return False, item.failed
        secret = item.secret
        found.secrets[("Secret", secret.namespace, secret.name)] = secret
        return True, item.failed
    if item.role == "workload":
        if item.workload is None:
            return False, item.failed
        found.workloads[item.workload.id] = item.workload
        return True, item.failed
    return False, item.failed


def _with_state(record: ObjectRecord, state: str, previous: InForce | None) -> ObjectRecord:
    """The record of the version in the files, or, for a retained object, of
    the last good version in force (naming the rejected one)."""
    if state == record.state:
        return record  # records are immutable: no need for a copy
    if state != RETAINED:
        return dataclasses.replace(record, state=state)
    assert previous is not None
    old = previous.records[record.key]
    return dataclasses.replace(old, state=RETAINED, rejected_at=f"{record.file}:{record.line}")


def _retained_note(record: ObjectRecord) -> Diagnostic:
    file, _, line = record.rejected_at.rpartition(":")
    message = (
        f"this version is rejected; the last good version ({record.file}:{record.line}) "
        "stays in force until it is fixed"
    )
    if record.held:
        message = (
            f"not found in the directory, which has a document that does not say what it "
            f"is (here); the last good version ({record.file}:{record.line}) stays in force "
            "until every document does"
        )
    return Diagnostic(
        file,
        Position(int(line), 1),
        message,
        obj=f"{record.kind} {record.namespace}/{record.name}",
        severity=Severity.WARNING,
    )


def _hold_missing(
    interpreted: Sequence[Interpreted],
    objects: Mapping[Key, tuple[ObjectRecord, Interpreted]],
    previous: InForce | None,
    found: _Collected,
) -> dict[Key, ObjectRecord]:
    """Keep in force what the load did not find while a document of it
    cannot be told apart (see the module's docstring); their records."""
    if previous is None:
        return {}
    holds = [
        d
        for item in interpreted
        if item.record is None
        for d in item.outside
        if d.severity is Severity.ERROR
    ]
    if not holds:
        return {}
    held: dict[Key, ObjectRecord] = {}
    for key, old in previous.records.items():
        if key in objects or old.state not in (ACTIVE, RETAINED):
            continue
        if not _retain(key, previous, found):
            continue
        same_file = [d for d in holds if d.file == old.file]
        where = min(same_file, key=lambda d: abs(d.position.line - old.line), default=holds[0])
        held[key] = dataclasses.replace(
            old,
            state=RETAINED,
            rejected_at=f"{where.file}:{where.position.line}",
            held=True,
        )
    # A broken AuthorizationPolicy with no good version denies what it
    # selects (fail closed): that stays too, or the break would allow all.
    for policy in previous.mesh.authorization_policies:
        key = ("AuthorizationPolicy", policy.namespace, policy.name)
        if policy.fail_closed and key not in objects:
            found.istio["AuthorizationPolicy"].append(policy)
    return held


def _retain(key: Key, previous: InForce, found: _Collected) -> bool:
    """Put the previous version of a failed object back; whether there was one."""
    old = previous.records.get(key)
    if old is None or old.state not in (ACTIVE, RETAINED):
        return False
    kind, namespace, name = key
    mesh = previous.mesh
    if kind in found.istio or kind in LEGACY_AUTHN_KINDS:
        items: tuple[Any, ...] = {
            "VirtualService": mesh.virtual_services,
            "DestinationRule": mesh.destination_rules,
            "Gateway": mesh.gateways,
            "PeerAuthentication": tuple(p for p in mesh.peer_authentications if not p.legacy),
            "Policy": tuple(p for p in mesh.peer_authentications if p.legacy and not p.mesh_wide),
            "MeshPolicy": tuple(p for p in mesh.peer_authentications if p.mesh_wide),
            "AuthorizationPolicy": tuple(
                p for p in mesh.authorization_policies if not p.fail_closed
            ),
            "Sidecar": mesh.sidecars,
            "Telemetry": mesh.telemetries,
            "RequestAuthentication": mesh.request_authentications,
        }[kind]
        matches = [o for o in items if (o.namespace, o.name) == (namespace, name)]
        legacy = kind in LEGACY_AUTHN_KINDS
        found.istio["PeerAuthentication" if legacy else kind].extend(matches)
        return bool(matches)
    added = False
    if kind == "Secret":
        for secret in mesh.secrets:
            if (secret.namespace, secret.name) == (namespace, name):
                added |= found.secrets.setdefault(key, secret) is secret
        return added
    if kind == "WorkloadEntry":
        for workload in mesh.workloads:
            if (workload.namespace, workload.name) == (namespace, name):
                added |= found.workloads.setdefault(workload.id, workload) is workload
        return added
    for service in mesh.services:
        if (service.kind, service.namespace, service.name) == key:
            added |= found.services.setdefault(service.hostname, service) is service
    return added


def _collect_services(
    item: Interpreted, found: _Collected, diagnostics: list[Diagnostic]
) -> tuple[bool, bool]:
    """A Service or ServiceEntry joins the registry only if none of its hosts
    is defined already (all of the object or none of it)."""
    conflicts = [s for s in item.services if s.hostname in found.services]
    if not conflicts:
        diagnostics.extend(item.diagnostics)
        if item.failed:
            return False, True
        found.services.update((s.hostname, s) for s in item.services)
        return bool(item.services), False
    reader = item.reader()
    reader.diagnostics = list(item.diagnostics)
    for service in conflicts:
        other = found.services[service.hostname]
        reader.report(
            ("spec",),
            f"host {service.hostname} is already defined by {other.kind} "
            f"{other.namespace}/{other.name} ({other.source.file}); ignored",
        )
    diagnostics.extend(reader.diagnostics)
    return False, True
