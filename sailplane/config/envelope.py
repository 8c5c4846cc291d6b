"""The Kubernetes envelope of every document: apiVersion, kind, metadata.

Checked before any kind-specific parsing: a document that is not a mesh
object is skipped with one info line; a mesh object with a bad envelope is
dropped with an error at the offending field; Istio annotations on the wrong
kind are flagged as ``istioctl analyze`` does (IST0107, IST0108).
"""

from __future__ import annotations

from collections.abc import Mapping

from sailplane.config.reader import ObjectReader, dns_subdomain_problem
from sailplane.config.yamldoc import Document
from sailplane.model.source import Diagnostic, Severity

# Istio's API groups; the slide typos of the reference talk map to the real group.
ISTIO_GROUPS = {
    "networking.istio.io": ("v1", "v1beta1", "v1alpha3"),
    "security.istio.io": ("v1", "v1beta1"),
    "telemetry.istio.io": ("v1", "v1alpha1"),
    "authentication.istio.io": ("v1alpha1",),
}
GROUP_TYPOS = {"net.istio.io": "networking.istio.io", "auth.istio.io": "authentication.istio.io"}

# Istio's annotations (istio.io/latest/docs/reference/config/annotations) and
# the kinds they belong on. Pod annotations configure injection, which
# sailplane does not do: on any kind here they are misplaced.
_POD = ("Pod",)
ANNOTATIONS: dict[str, tuple[str, ...]] = {
    "sidecar.istio.io/inject": _POD,
    "sidecar.istio.io/status": _POD,
    "sidecar.istio.io/proxyCPU": _POD,
    "sidecar.istio.io/proxyMemory": _POD,
    "sidecar.istio.io/proxyImage": _POD,
    "sidecar.istio.io/logLevel": _POD,
    "sidecar.istio.io/componentLogLevel": _POD,
    "sidecar.istio.io/rewriteAppHTTPProbers": _POD,
    "sidecar.istio.io/interceptionMode": _POD,
    "sidecar.istio.io/bootstrapOverride": _POD,
    "sidecar.istio.io/agentLogLevel": _POD,
    "traffic.sidecar.istio.io/includeInboundPorts": _POD,
    "traffic.sidecar.istio.io/excludeInboundPorts": _POD,
    "traffic.sidecar.istio.io/includeOutboundIPRanges": _POD,
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": _POD,
    "traffic.sidecar.istio.io/includeOutboundPorts": _POD,
    "traffic.sidecar.istio.io/excludeOutboundPorts": _POD,
    "proxy.istio.io/config": _POD,
    "status.sidecar.istio.io/port": _POD,
    "inject.istio.io/templates": _POD,
    "prometheus.istio.io/merge-metrics": _POD,
    "networking.istio.io/exportTo": ("Service",),
    "networking.istio.io/traffic-distribution": ("Service", "ServiceEntry"),
    "alpha.istio.io/canonical-serviceaccounts": ("Service",),
    "istio.io/dry-run": ("AuthorizationPolicy",),
    "kubectl.kubernetes.io/last-applied-configuration": (),  # any kind
}


def reader_for(doc: Document, diagnostics: list[Diagnostic]) -> ObjectReader | None:
    """A reader for a mesh object, or None (diagnostics say why)."""
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
    if not _check_api_version(reader, api_version, diagnostics):
        return None
    if not isinstance(data.get("metadata"), Mapping):
        reader.report(("metadata",), "metadata with a name is required", code="IST0106")
        diagnostics.extend(reader.diagnostics)
        return None
    _check_metadata(reader)
    if reader.failed:
        diagnostics.extend(reader.diagnostics)
        return None
    return reader


def _check_api_version(
    reader: ObjectReader, api_version: str, diagnostics: list[Diagnostic]
) -> bool:
    kind = reader.kind
    group, _, version = api_version.rpartition("/")
    if group in GROUP_TYPOS:
        correct = GROUP_TYPOS[group]
        reader.report(
            ("apiVersion",),
            f"API group {group!r} does not exist; use '{correct}/{version}'",
            Severity.WARNING,
        )
        group = correct
    if group == "" and kind == "ConfigMap" and version == "v1":
        # Only the `istio` ConfigMap (mesh settings) matters; assemble decides.
        return True
    if group == "" and kind == "Service":
        if version != "v1":
            reader.report(("apiVersion",), "Service must be apiVersion v1")
            diagnostics.extend(reader.diagnostics)
            return False
        return True
    if group in ISTIO_GROUPS:
        if version not in ISTIO_GROUPS[group]:
            reader.report(
                ("apiVersion",),
                f"unknown version {version!r} of {group}; expected one "
                f"of {', '.join(ISTIO_GROUPS[group])}",
                code="IST0106",
            )
            diagnostics.extend(reader.diagnostics)
            return False
        return True
    diagnostics.append(
        Diagnostic(
            reader.source.file,
            reader.source.position,
            f"skipping {api_version} {kind}: not a mesh kind",
            obj=reader.label,
            severity=Severity.INFO,
        )
    )
    return False


def _check_metadata(reader: ObjectReader) -> None:
    name = reader.string(("metadata", "name"), required=True)
    if name is not None and (problem := dns_subdomain_problem(name)):
        reader.report(("metadata", "name"), problem, code="IST0106")
    namespace = reader.string(("metadata", "namespace"))
    if namespace is not None and (
        len(namespace) > 63 or "." in namespace or dns_subdomain_problem(namespace)
    ):
        reader.report(
            ("metadata", "namespace"),
            f"invalid namespace {namespace!r}: use at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit",
            code="IST0106",
        )
    reader.labels(("metadata", "labels"))
    for key in reader.mapping(("metadata", "annotations")) or {}:
        _check_annotation(reader, str(key))


def _check_annotation(reader: ObjectReader, key: str) -> None:
    path = ("metadata", "annotations", key)
    kinds = ANNOTATIONS.get(key)
    if kinds is None:
        domain = key.partition("/")[0] if "/" in key else ""
        if domain == "istio.io" or domain.endswith(".istio.io"):
            reader.report(path, f"unknown annotation {key!r}", Severity.WARNING, code="IST0108")
        return
    if kinds and reader.kind not in kinds:
        reader.report(
            path,
            f"misplaced annotation {key!r}: it applies to {' or '.join(kinds)}, not {reader.kind}",
            Severity.WARNING,
            code="IST0107",
        )
