"""The Kubernetes envelope of every document: apiVersion, kind, metadata.

Checked before any kind-specific parsing: a document of another API group
(apps/v1 Deployment, ...) is skipped with one info line; a mesh object with a
bad envelope is dropped with an error at the offending field. A kind or
apiVersion that is nearly one sailplane reads, or that is unknown in a group
it reads (Istio's groups, core v1), is an error with "did you mean", never a
skip: :func:`identify` then names the object it was meant to be, so that its
last good version stays in force (assemble.py). Istio annotations on the
wrong kind are flagged as ``istioctl analyze`` does (IST0107, IST0108).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from sailplane.config.reader import ObjectReader, did_you_mean, dns_subdomain_problem
from sailplane.config.records import Key
from sailplane.config.yamldoc import Document
from sailplane.model.source import Diagnostic, Severity

# The authentication.istio.io kinds of Istio 1.4, read as PeerAuthentication.
LEGACY_AUTHN_KINDS = ("Policy", "MeshPolicy")
# Istio's API groups; the slide typos of the reference talk map to the real group.
ISTIO_GROUPS = {
    "networking.istio.io": ("v1", "v1beta1", "v1alpha3"),
    "security.istio.io": ("v1", "v1beta1"),
    "telemetry.istio.io": ("v1", "v1alpha1"),
    "authentication.istio.io": ("v1alpha1",),
}
GROUP_TYPOS = {"net.istio.io": "networking.istio.io", "auth.istio.io": "authentication.istio.io"}

# The kinds sailplane reads, by API group ("" is core v1).
MESH_KINDS: dict[str, tuple[str, ...]] = {
    "networking.istio.io": (
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "Sidecar",
    ),
    "security.istio.io": ("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"),
    "telemetry.istio.io": ("Telemetry",),
    "authentication.istio.io": LEGACY_AUTHN_KINDS,
    "": ("Service", "ConfigMap", "Secret"),
}
# Real kinds of those groups that sailplane does not translate: Istio's are
# accepted and reported as not supported (interpret.py), core ones skipped.
OTHER_KINDS: dict[str, tuple[str, ...]] = {
    "networking.istio.io": ("WorkloadGroup", "EnvoyFilter", "ProxyConfig"),
    "security.istio.io": (),
    "telemetry.istio.io": (),
    "authentication.istio.io": (),
    "": (
        "Binding",
        "ComponentStatus",
        "Endpoints",
        "Event",
        "LimitRange",
        "List",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Pod",
        "PodTemplate",
        "ReplicationController",
        "ResourceQuota",
        "ServiceAccount",
    ),
}
_ALL_MESH_KINDS = tuple(k for kinds in MESH_KINDS.values() for k in kinds)
_GROUP_OF = {kind: group for group, kinds in MESH_KINDS.items() for kind in kinds}
# How alike a word must be to a known one to be taken for its typo (difflib's
# ratio: "VirtualServce" 0.96, "Gatway" 0.92; real kinds of other groups
# stay below: ServiceAccount/ServiceEntry 0.69, GatewayClass/Gateway 0.74).
_TYPO_CUTOFF = 0.8


def _close(word: str, known: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(known), n=1, cutoff=_TYPO_CUTOFF)
    return found[0] if found else None


def _api_version(kind: str) -> str:
    group = _GROUP_OF[kind]
    return f"{group}/{ISTIO_GROUPS[group][0]}" if group else "v1"


def identify(doc: Document) -> Key | None:
    """The object a document with a broken envelope was meant to be
    ``(kind, namespace, name)``: its kind, or the mesh kind it is a typo of,
    and its metadata; None when that cannot be told."""
    data = doc.data
    if not isinstance(data, Mapping):
        return None
    kind, metadata = data.get("kind"), data.get("metadata")
    if not isinstance(kind, str) or not isinstance(metadata, Mapping):
        return None
    kind = kind if kind in _GROUP_OF else (_close(kind, _ALL_MESH_KINDS) or "")
    name, namespace = metadata.get("name"), metadata.get("namespace", "default")
    if not kind or not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    return kind, namespace, name


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
    # On a WorkloadEntry: its proxy's capture mode (registry.parse_workload_entry).
    "sidecar.istio.io/interceptionMode": ("Pod", "WorkloadEntry"),
    # On a WorkloadEntry: Envoy stats its proxy keeps (registry._stats_inclusion).
    "sidecar.istio.io/statsInclusionPrefixes": ("Pod", "WorkloadEntry"),
    "sidecar.istio.io/statsInclusionSuffixes": ("Pod", "WorkloadEntry"),
    "sidecar.istio.io/statsInclusionRegexps": ("Pod", "WorkloadEntry"),
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
    problem = _envelope_problem(group, version, kind)
    if problem is not None:
        path, message = problem
        reader.report(path, message, code="IST0106")
        diagnostics.extend(reader.diagnostics)
        return False
    if group in MESH_KINDS and kind in MESH_KINDS[group] + OTHER_KINDS[group] and group:
        return True  # an Istio kind: read, or reported as not supported yet
    if group == "" and kind in MESH_KINDS[""]:
        # Only the `istio` ConfigMap (mesh settings) matters; assemble decides.
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


def _envelope_problem(group: str, version: str, kind: str) -> tuple[tuple[str], str] | None:
    """What is wrong with apiVersion or kind, if it is a mistake rather than
    a kind of another API group: ``(field, message)``."""
    if not group and (close := _close(version, ISTIO_GROUPS)) is not None:
        return ("apiVersion",), (
            f"apiVersion {version!r} has no version (did you mean "
            f"'{close}/{ISTIO_GROUPS[close][0]}'?)"
        )
    if group not in MESH_KINDS:
        if (close := _close(group, ISTIO_GROUPS)) is not None:
            return ("apiVersion",), (
                f"unknown API group {group!r} (did you mean '{close}/{ISTIO_GROUPS[close][0]}'?)"
            )
        if kind not in _GROUP_OF and (close := _close(kind, _ALL_MESH_KINDS)) is not None:
            return ("kind",), (
                f"unknown kind {kind!r} (did you mean {close!r}, apiVersion {_api_version(close)}?)"
            )
        return None  # another group's kind: skipped
    known = ISTIO_GROUPS.get(group, ("v1",))
    where = group or "the core API group"
    if version not in known:
        close = _close(version, known) or known[0]
        return ("apiVersion",), (
            f"unknown version {version!r} of {where} (did you mean "
            f"'{f'{group}/' if group else ''}{close}'?); it has {', '.join(known)}"
        )
    kinds = MESH_KINDS[group] + OTHER_KINDS[group]
    if kind in kinds:
        return None
    if kind in _GROUP_OF:
        return ("apiVersion",), (
            f"{kind} is not in {where} (did you mean apiVersion {_api_version(kind)}?)"
        )
    close = _close(kind, kinds) or _close(kind, _ALL_MESH_KINDS)
    hint = f" (did you mean {close!r}?)" if close else f"; it has {', '.join(MESH_KINDS[group])}"
    return ("kind",), f"unknown kind {kind!r} in {where}{hint}"


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
            hint = did_you_mean(key, ANNOTATIONS)
            reader.report(
                path, f"unknown annotation {key!r}{hint}", Severity.WARNING, code="IST0108"
            )
        return
    if kinds and reader.kind not in kinds:
        reader.report(
            path,
            f"misplaced annotation {key!r}: it applies to {' or '.join(kinds)}, not {reader.kind}",
            Severity.WARNING,
            code="IST0107",
        )
