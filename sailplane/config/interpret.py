"""One document -> the object(s) it defines: the per-document stage.

Everything here is a pure function of the document (its data, file and
position) and the domain suffix, and nothing else: no other document, no
configuration in force. That is what makes the result cacheable across loads
(incremental.py) and lets the translator compare unchanged objects by
identity. What needs other documents (duplicates, a host defined twice, the
last good version) is decided in assemble.py, from what is recorded here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from sailplane.config.authorization import parse_authorization_policy
from sailplane.config.destinationrule import parse_destination_rule
from sailplane.config.envelope import LEGACY_AUTHN_KINDS, identify, reader_for
from sailplane.config.gateway import parse_gateway
from sailplane.config.reader import ObjectReader
from sailplane.config.records import ObjectRecord, document_digest
from sailplane.config.registry import parse_service, parse_service_entry, parse_workload_entry
from sailplane.config.requestauthn import parse_request_authentication
from sailplane.config.secret import parse_secret
from sailplane.config.security import (
    parse_legacy_policy,
    parse_mesh_policy,
    parse_peer_authentication,
)
from sailplane.config.sidecar import MESH_CONFIGMAP, parse_mesh_settings, parse_sidecar
from sailplane.config.telemetry import parse_telemetry
from sailplane.config.virtualservice import parse_virtual_service
from sailplane.config.yamldoc import Document, excerpt
from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.credentials import TLSSecret
from sailplane.model.mesh import ObjectRef
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
from sailplane.model.registry import Service, Workload
from sailplane.model.security import PeerAuthentication, RequestAuthentication
from sailplane.model.sidecar import MeshSettings, Sidecar
from sailplane.model.source import Diagnostic, Position, Severity
from sailplane.model.telemetry import Telemetry

IstioObject = (
    VirtualService
    | DestinationRule
    | Gateway
    | PeerAuthentication
    | AuthorizationPolicy
    | RequestAuthentication
    | Sidecar
    | Telemetry
)

# The kinds that become one model object each, collected by kind.
ISTIO_KINDS = (
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Sidecar",
    "Telemetry",
)

# Where the object goes in the mesh: ``istio`` (by ``istio_kind``), the mesh
# ``settings``, the service ``registry`` (Service, ServiceEntry), a
# ``workload``; ``ignored`` kinds add nothing.
Role = Literal["istio", "settings", "registry", "workload", "secret", "ignored"]


@dataclass(frozen=True, slots=True)
class Interpreted:
    """What one document defines, and what its reader said about it.

    ``record`` is None when the document is not a mesh object at all (not a
    mapping, another API group) or its envelope is so broken that it does not
    say which object it is: ``outside`` then holds all it reports. A broken
    envelope that still names an object (envelope.identify) is a failed
    version of that object instead, with no role. Otherwise a load reports
    ``outside``, then ``diagnostics`` (or, for a duplicate, ``envelope``
    only: a duplicate is not parsed).
    """

    document: Document
    outside: tuple[Diagnostic, ...] = ()
    record: ObjectRecord | None = None
    envelope: tuple[Diagnostic, ...] = ()  # what the reader said before kind-specific parsing
    diagnostics: tuple[Diagnostic, ...] = ()  # ... and after (starts with ``envelope``)
    failed: bool = False  # an error among ``diagnostics``
    role: Role = "ignored"
    istio_kind: str = ""  # a legacy Policy becomes a PeerAuthentication
    istio: IstioObject | None = None
    services: tuple[Service, ...] = ()  # one per host of a ServiceEntry
    workload: Workload | None = None
    settings: MeshSettings | None = None
    secret: TLSSecret | None = None  # a TLS Secret (credentialName)
    # An invalid AuthorizationPolicy in its deny-everything form.
    fail_closed: AuthorizationPolicy | None = None
    ref: ObjectRef | None = None  # how the mesh lists the object when it is in force as read

    def reader(self) -> ObjectReader:
        """A reader that has said what the envelope check said: for the
        diagnostics only other documents can cause (duplicates, host
        conflicts), worded exactly as the reader words the others."""
        assert self.record is not None
        reader = ObjectReader(self.document.data, self.document.source, self.record.kind)
        reader.diagnostics = list(self.envelope)
        return reader


class _Kind(TypedDict, total=False):
    """The kind-specific fields of :class:`Interpreted`."""

    role: Role
    istio_kind: str
    istio: IstioObject | None
    services: tuple[Service, ...]
    workload: Workload | None
    settings: MeshSettings | None
    secret: TLSSecret | None
    fail_closed: AuthorizationPolicy | None


# The longest message a diagnostic keeps: readers quote the values they
# reject, and a value built from aliases can be megabytes long.
MESSAGE_CHARS = 300


def interpret_document(doc: Document, domain_suffix: str) -> Interpreted:
    """Read one document into model objects, collecting diagnostics.

    Never raises: a document that makes a reader fail unexpectedly is an
    error at the document, like any other invalid object."""
    try:
        item = _interpret(doc, domain_suffix)
    except Exception as exc:  # a reader's bug must not stop the load
        problem = excerpt(f"{type(exc).__name__}: {exc}", 200)
        error = Diagnostic(
            doc.source.file, doc.source.position, f"cannot read this document: {problem}"
        )
        return _broken(doc, (error,))
    if any(len(d.message) > MESSAGE_CHARS for d in (*item.outside, *item.diagnostics)):
        item = dataclasses.replace(
            item,
            outside=_shortened(item.outside),
            envelope=_shortened(item.envelope),
            diagnostics=_shortened(item.diagnostics),
        )
    return item


def _shortened(found: tuple[Diagnostic, ...]) -> tuple[Diagnostic, ...]:
    return tuple(
        dataclasses.replace(d, message=excerpt(d.message, MESSAGE_CHARS))
        if len(d.message) > MESSAGE_CHARS
        else d
        for d in found
    )


def _broken(doc: Document, errors: tuple[Diagnostic, ...]) -> Interpreted:
    """A document with errors before any object could be read from it: a
    failed version of the object it names, if it names one (see
    envelope.identify), so that the object's last good version stays in
    force; otherwise nothing but its diagnostics (assemble.py then keeps
    what the directory loses while such a document is in it)."""
    key = identify(doc)
    if key is None:
        return Interpreted(doc, errors)
    kind, namespace, name = key
    record = ObjectRecord(
        kind,
        namespace,
        name,
        doc.source.file,
        doc.source.position.line,
        document_digest(doc.data),
    )
    return Interpreted(doc, (), record, errors, errors, failed=True)


def _interpret(doc: Document, domain_suffix: str) -> Interpreted:
    outside: list[Diagnostic] = []
    reader = reader_for(doc, outside)
    if reader is None:
        errors = tuple(outside)
        if any(d.severity is Severity.ERROR for d in errors):
            return _broken(doc, errors)
        return Interpreted(doc, errors)
    record = ObjectRecord(
        reader.kind,
        reader.namespace,
        reader.name,
        doc.source.file,
        doc.source.position.line,
        document_digest(doc.data),
    )
    envelope = tuple(reader.diagnostics)
    parsed = _parse(reader, domain_suffix)
    return Interpreted(
        doc,
        tuple(outside),
        record,
        envelope,
        tuple(reader.diagnostics),
        reader.failed,
        ref=ObjectRef(record.kind, record.namespace, record.name, record.file, record.line),
        **parsed,
    )


def shift_interpreted(item: Interpreted, document: Document, domain_suffix: str) -> Interpreted:
    """What :func:`interpret_document` gives for ``document``, the document of
    ``item`` moved to other lines (``shift_document``), without reading it
    again: a document's place changes nothing in what it defines but the
    ``source`` of its objects and the lines of its diagnostics and record.
    (A model object that kept a position anywhere but in ``source`` would
    have to be shifted here too; test_config_incremental moves every kind.)"""
    old, new = item.document.source, document.source
    lines = new.position.line - old.position.line
    objects: list[Any] = [
        item.istio,
        item.workload,
        item.settings,
        item.fail_closed,
        item.secret,
    ]
    objects += item.services
    if new.file != old.file or any(o is not None and o.source is not old for o in objects):
        return interpret_document(document, domain_suffix)  # not as simple as that

    def moved(obj: Any) -> Any:
        return None if obj is None else dataclasses.replace(obj, source=new)

    def diagnostics(found: tuple[Diagnostic, ...]) -> tuple[Diagnostic, ...]:
        return tuple(
            Diagnostic(
                d.file,
                Position(d.position.line + lines, d.position.column),
                d.message,
                d.obj,
                d.field_path,
                d.severity,
                d.code,
            )
            for d in found
        )

    record, ref = item.record, item.ref
    if record is not None:
        record = ObjectRecord(
            record.kind,
            record.namespace,
            record.name,
            record.file,
            record.line + lines,
            record.digest,
        )
    if ref is not None:
        ref = ObjectRef(ref.kind, ref.namespace, ref.name, ref.file, ref.line + lines)
    return Interpreted(
        document=document,
        outside=diagnostics(item.outside),
        record=record,
        envelope=diagnostics(item.envelope),
        diagnostics=diagnostics(item.diagnostics),
        failed=item.failed,
        role=item.role,
        istio_kind=item.istio_kind,
        istio=moved(item.istio),
        services=tuple(moved(s) for s in item.services),
        workload=moved(item.workload),
        settings=moved(item.settings),
        secret=moved(item.secret),
        fail_closed=moved(item.fail_closed),
        ref=ref,
    )


def _parse(reader: ObjectReader, domain_suffix: str) -> _Kind:
    """The kind-specific part: what the document adds to the mesh."""
    kind = reader.kind
    if kind in ISTIO_KINDS or kind in LEGACY_AUTHN_KINDS:
        istio: IstioObject | None
        if kind == "VirtualService":
            istio = parse_virtual_service(reader, domain_suffix)
        elif kind == "DestinationRule":
            istio = parse_destination_rule(reader, domain_suffix)
        elif kind == "Gateway":
            istio = parse_gateway(reader)
        elif kind == "PeerAuthentication":
            istio = parse_peer_authentication(reader)
        elif kind == "Sidecar":
            istio = parse_sidecar(reader)
        elif kind == "Telemetry":
            istio = parse_telemetry(reader)
        elif kind == "RequestAuthentication":
            istio = parse_request_authentication(reader)
        elif kind == "AuthorizationPolicy":
            policy = parse_authorization_policy(reader)
            if policy.fail_closed:
                return {"role": "istio", "istio_kind": kind, "fail_closed": policy}
            istio = policy
        else:  # the legacy authentication.istio.io kinds become PeerAuthentications
            parse = parse_mesh_policy if kind == "MeshPolicy" else parse_legacy_policy
            istio = parse(reader)
            kind = "PeerAuthentication"
        return {"role": "istio", "istio_kind": kind, "istio": istio}
    if kind == "ConfigMap":
        if (reader.namespace, reader.name) != ("istio-system", MESH_CONFIGMAP):
            return {}  # not the mesh settings: ignored
        return {"role": "settings", "settings": parse_mesh_settings(reader)}
    if kind == "Service":
        service = parse_service(reader, domain_suffix)
        return {"role": "registry", "services": (service,) if service else ()}
    if kind == "ServiceEntry":
        return {"role": "registry", "services": tuple(parse_service_entry(reader, domain_suffix))}
    if kind == "WorkloadEntry":
        return {"role": "workload", "workload": parse_workload_entry(reader)}
    if kind == "Secret":
        return {"role": "secret", "secret": parse_secret(reader)}
    reader.report(("kind",), f"{kind} is not supported yet by sailplane; ignored", Severity.WARNING)
    return {}
