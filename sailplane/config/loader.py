"""Load a configuration directory into a :class:`MeshConfig`.

A directory state either parses completely or not at all: one file that is
not valid YAML makes :func:`load_dir` report ``parse_failed`` so the caller
keeps serving the previous configuration (nothing is half-applied). Objects
that parse but are invalid are dropped with a diagnostic; the rest is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sailplane.config.destinationrule import parse_destination_rule
from sailplane.config.gateway import parse_gateway
from sailplane.config.reader import ObjectReader
from sailplane.config.references import check_references
from sailplane.config.registry import parse_service, parse_service_entry, parse_workload_entry
from sailplane.config.virtualservice import parse_virtual_service
from sailplane.config.yamldoc import Document, parse_documents
from sailplane.errors import YamlSyntaxError
from sailplane.model.hosts import DEFAULT_DOMAIN_SUFFIX
from sailplane.model.mesh import MeshConfig, ObjectRef
from sailplane.model.networking import DestinationRule, Gateway, VirtualService
from sailplane.model.registry import Service, Workload
from sailplane.model.source import Diagnostic, Position, Severity

YAML_SUFFIXES = (".yaml", ".yml")

# Istio's API groups; the slide typos of the reference talk map to the real group.
ISTIO_GROUPS = {
    "networking.istio.io": ("v1", "v1beta1", "v1alpha3"),
    "security.istio.io": ("v1", "v1beta1"),
    "telemetry.istio.io": ("v1", "v1alpha1"),
    "authentication.istio.io": ("v1alpha1",),
}
GROUP_TYPOS = {"net.istio.io": "networking.istio.io", "auth.istio.io": "authentication.istio.io"}

# Kinds this version of sailplane translates. Istio kinds not listed are accepted
# with a warning so a directory written for Istio still loads.
REGISTRY_KINDS = ("Service", "ServiceEntry", "WorkloadEntry")


@dataclass(frozen=True, slots=True)
class LoadResult:
    mesh: MeshConfig | None  # None when some file did not parse
    diagnostics: tuple[Diagnostic, ...]

    @property
    def parse_failed(self) -> bool:
        return self.mesh is None

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)


def config_files(root: Path) -> list[Path]:
    """Every YAML file under ``root``, sorted, hidden files and dirs skipped
    (editors' swap and temp files live there)."""
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix in YAML_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def load_dir(root: Path, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> LoadResult:
    files = config_files(root)
    texts: list[tuple[str, str]] = []
    for path in files:
        try:
            texts.append((_display_name(path, root), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            diag = Diagnostic(
                file=str(path), position=Position(1, 1), message=f"cannot read: {exc}"
            )
            return LoadResult(None, (diag,))
    return load_texts(texts, domain_suffix)


def _display_name(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent if root.is_file() else root))
    except ValueError:
        return str(path)


def load_texts(
    texts: Iterable[tuple[str, str]], domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
) -> LoadResult:
    """Load ``(file name, text)`` pairs; the pure core of :func:`load_dir`."""
    digest = hashlib.sha256()
    documents: list[Document] = []
    syntax_errors: list[Diagnostic] = []
    for name, text in texts:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        try:
            documents.extend(parse_documents(text, name))
        except YamlSyntaxError as exc:
            syntax_errors.append(exc.diagnostic)
    if syntax_errors:
        return LoadResult(None, tuple(syntax_errors))
    mesh, diagnostics = build_mesh(documents, domain_suffix)
    diagnostics.sort(key=lambda d: (d.file, d.position.line, d.position.column))
    mesh = dataclasses.replace(mesh, diagnostics=tuple(diagnostics), digest=digest.hexdigest())
    return LoadResult(mesh, tuple(diagnostics))


def build_mesh(
    documents: list[Document], domain_suffix: str
) -> tuple[MeshConfig, list[Diagnostic]]:
    diagnostics: list[Diagnostic] = []
    services: dict[str, Service] = {}
    workloads: dict[str, Workload] = {}
    istio: dict[str, list[Any]] = {"VirtualService": [], "DestinationRule": [], "Gateway": []}
    objects: list[ObjectRef] = []
    seen: dict[tuple[str, str, str], Diagnostic] = {}

    for doc in documents:
        reader = _reader_for(doc, diagnostics)
        if reader is None:
            continue
        key = (reader.kind, reader.namespace, reader.name)
        if key in seen:
            first = seen[key]
            reader.report(
                ("metadata", "name"),
                f"duplicate {reader.kind} {reader.namespace}/"
                f"{reader.name}; first defined at {first.file}:{first.position.line}",
            )
            diagnostics.extend(reader.diagnostics)
            continue
        seen[key] = Diagnostic(doc.source.file, doc.source.position, "")
        kept = _parse_object(reader, domain_suffix, services, workloads, istio)
        diagnostics.extend(reader.diagnostics)
        if kept:
            objects.append(
                ObjectRef(
                    reader.kind,
                    reader.namespace,
                    reader.name,
                    doc.source.file,
                    doc.source.position.line,
                )
            )
    by_key = lambda o: (o.namespace, o.name)  # noqa: E731
    mesh = MeshConfig(
        services=tuple(sorted(services.values(), key=lambda s: s.hostname)),
        workloads=tuple(sorted(workloads.values(), key=lambda w: w.id)),
        virtual_services=tuple(sorted(istio["VirtualService"], key=by_key)),
        destination_rules=tuple(sorted(istio["DestinationRule"], key=by_key)),
        gateways=tuple(sorted(istio["Gateway"], key=by_key)),
        domain_suffix=domain_suffix,
    )
    # Cross-object checks need every object; what fails them is dropped.
    mesh, dropped, problems = check_references(mesh)
    diagnostics.extend(problems)
    in_force = [o for o in objects if (o.kind, o.namespace, o.name) not in dropped]
    return dataclasses.replace(mesh, objects=tuple(in_force)), diagnostics


def _reader_for(doc: Document, diagnostics: list[Diagnostic]) -> ObjectReader | None:
    """Check the envelope (apiVersion, kind, metadata) and return a reader for
    the kinds we handle; other kinds get one info line."""
    data = doc.data
    if not isinstance(data, Mapping):
        diagnostics.append(
            Diagnostic(
                doc.source.file,
                doc.source.position,
                "a document must be a mapping with apiVersion and kind",
                code="IST0106",
            )
        )
        return None
    kind = data.get("kind")
    api_version = data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        diagnostics.append(
            Diagnostic(
                doc.source.file,
                doc.source.position,
                "a document needs string fields apiVersion and kind",
                code="IST0106",
            )
        )
        return None
    reader = ObjectReader(data, doc.source, kind)
    group, _, version = api_version.rpartition("/")
    if group in GROUP_TYPOS:
        correct = GROUP_TYPOS[group]
        reader.report(
            ("apiVersion",),
            f"API group {group!r} does not exist; use '{correct}/{version}'",
            Severity.WARNING,
        )
        group = correct
    if group == "" and kind == "Service":
        if version != "v1":
            reader.report(("apiVersion",), "Service must be apiVersion v1")
            diagnostics.extend(reader.diagnostics)
            return None
    elif group in ISTIO_GROUPS:
        if version not in ISTIO_GROUPS[group]:
            reader.report(
                ("apiVersion",),
                f"unknown version {version!r} of {group}; expected one "
                f"of {', '.join(ISTIO_GROUPS[group])}",
                code="IST0106",
            )
            diagnostics.extend(reader.diagnostics)
            return None
    else:
        diagnostics.append(
            Diagnostic(
                doc.source.file,
                doc.source.position,
                f"skipping {api_version} {kind}: not a mesh kind",
                obj=reader.label,
                severity=Severity.INFO,
            )
        )
        return None
    if not isinstance(data.get("metadata"), Mapping):
        reader.report(("metadata",), "metadata with a name is required", code="IST0106")
        diagnostics.extend(reader.diagnostics)
        return None
    return reader


def _parse_object(
    reader: ObjectReader,
    domain_suffix: str,
    services: dict[str, Service],
    workloads: dict[str, Workload],
    istio: dict[str, list[Any]],
) -> bool:
    """Add the object to the collections; False when it was dropped."""
    kind = reader.kind
    parsed: VirtualService | DestinationRule | Gateway | Service | None
    if kind in istio:
        if kind == "VirtualService":
            parsed = parse_virtual_service(reader, domain_suffix)
        elif kind == "DestinationRule":
            parsed = parse_destination_rule(reader, domain_suffix)
        else:
            parsed = parse_gateway(reader)
        if parsed is None:
            return False
        istio[kind].append(parsed)
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
        workloads[workload.id] = workload
        return True
    else:
        reader.report(
            ("kind",), f"{kind} is not supported yet by sailplane; ignored", Severity.WARNING
        )
        return False
    for service in candidates:
        if service.hostname in services:
            other = services[service.hostname]
            reader.report(
                ("spec",),
                f"host {service.hostname} is already defined by {other.kind} "
                f"{other.namespace}/{other.name} ({other.source.file}); ignored",
            )
            continue
        services[service.hostname] = service
    return bool(candidates)
