"""One access log entry -> Istio's attributes (the labels of its standard
metrics), resolved against the registry. Pure: no I/O, no clock.

Who is who, by side (``reporter``):

* ``source`` (the caller's outbound entry): the source is the proxy that
  sent the entry. The destination service comes from the upstream cluster
  (``outbound|PORT|SUBSET|HOST``); the destination workload from the peer
  name the destination's sidecar returned (accepted only if it is an
  instance of that cluster), else from the upstream address, else from the
  cluster's instances when they are all one workload. The principals are
  the identities sailplane's own configuration pins for that hop when it is
  mTLS (the cluster verifies exactly that SAN); ``connection_security_policy``
  is ``unknown``, as Istio reports it on this side.
* ``destination`` (the callee's inbound entry): the destination is the proxy
  that sent the entry. The source principal is the peer certificate's URI
  SAN; the source workload the peer name its sidecar sent (accepted only if
  its identity matches the certificate, when there is one), else the only
  workload with that identity, else the downstream address.

Anything that cannot be known is ``unknown``, as in Istio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from sailplane.model.registry import Service, Workload
from sailplane.telemetry.index import MeshIndex
from sailplane.translate.telemetry import DOWNSTREAM_PEER, METADATA_NAMESPACE, UPSTREAM_PEER

UNKNOWN = "unknown"
# HTTPAccessLogEntry.protocol_version as Envoy names it.
PROTOCOLS = {1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 4: "HTTP/3"}

# Istio's label order (istio.io/latest/docs/reference/config/metrics).
HTTP_LABELS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS = tuple(
    name for name in HTTP_LABELS if name not in ("response_code", "grpc_response_status")
)

# ResponseFlags fields -> Envoy's short names, in Envoy's order.
_FLAGS = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),  # a message: set when present
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)
_SPECIAL_CLUSTERS = ("PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster")


def response_flags(flags: accesslog_pb2.ResponseFlags) -> str:
    """Envoy's ``%RESPONSE_FLAGS%``: short names joined by commas, ``-`` for none."""
    found = [
        short
        for name, short in _FLAGS
        if (flags.HasField(name) if name == "unauthorized_details" else getattr(flags, name))
    ]
    return ",".join(found) or "-"


@dataclass(frozen=True, slots=True)
class Peer:
    """One side of a request, as its labels name it."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    principal: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    # The workload's labels, for tag overrides (``upstream_peer.labels['app']``).
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


def peer_of(workload: Workload, principal: str = UNKNOWN) -> Peer:
    labels = workload.labels
    return Peer(
        workload=labels.get("service.istio.io/workload-name") or workload.name,
        namespace=workload.namespace,
        principal=principal,
        app=labels.get("app", UNKNOWN),
        version=labels.get("version", UNKNOWN),
        canonical_service=labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload.name,
        canonical_revision=labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest",
        labels=labels,
    )


@dataclass(frozen=True, slots=True)
class ServiceLabels:
    service: str = UNKNOWN  # the FQDN
    name: str = UNKNOWN
    namespace: str = UNKNOWN


def service_labels(service: Service) -> ServiceLabels:
    # Istio: a Kubernetes Service's name; a ServiceEntry's host.
    name = service.short_name or service.hostname
    return ServiceLabels(service.hostname, name, service.namespace)


@dataclass(frozen=True, slots=True)
class Attributes:
    """Everything the metrics and the JSON access log need about one entry."""

    reporter: str
    source: Peer
    destination: Peer
    service: ServiceLabels
    protocol: str  # http | grpc | tcp
    response_code: str = "0"
    grpc_status: str = ""
    flags: str = "-"
    security: str = UNKNOWN  # mutual_tls | none | unknown

    def http_labels(self) -> tuple[str, ...]:
        s, d = self.source, self.destination
        return (
            self.reporter,
            s.workload,
            s.canonical_service,
            s.canonical_revision,
            s.namespace,
            s.principal,
            s.app,
            s.version,
            d.workload,
            d.namespace,
            d.principal,
            d.app,
            d.version,
            self.service.service,
            d.canonical_service,
            d.canonical_revision,
            self.service.name,
            self.service.namespace,
            self.protocol,
            self.response_code,
            self.grpc_status,
            self.flags,
            self.security,
        )

    def tcp_labels(self) -> tuple[str, ...]:
        labels = self.http_labels()
        return (*labels[:19], *labels[21:])


def address_ip(address: address_pb2.Address) -> str:
    """The socket address's IP; "" when there is none."""
    return address.socket_address.address if address.HasField("socket_address") else ""


def address_port(address: address_pb2.Address) -> int:
    """The socket address's port; 0 when there is none."""
    return address.socket_address.port_value if address.HasField("socket_address") else 0


def _metadata(common: accesslog_pb2.AccessLogCommon, key: str) -> str:
    metadata: base_pb2.Metadata = common.metadata
    if METADATA_NAMESPACE not in metadata.filter_metadata:
        return ""
    value = metadata.filter_metadata[METADATA_NAMESPACE].fields.get(key)
    return value.string_value if value is not None else ""


def peer_node_id(value: str) -> str:
    """Our peer header is the node id; Istio's ``sidecar~IP~ID~DOMAIN`` works too."""
    parts = value.split("~")
    return parts[2] if len(parts) == 4 else value


def peer_certificate_uri(common: accesslog_pb2.AccessLogCommon) -> str:
    for san in common.tls_properties.peer_certificate_properties.subject_alt_name:
        if san.uri:
            return str(san.uri)
    return ""


def _passthrough_service(name: str, authority: str) -> ServiceLabels:
    host = authority.rpartition(":")[0] if authority.count(":") == 1 else authority
    return ServiceLabels(host or UNKNOWN, name, UNKNOWN)


def outbound_attributes(
    index: MeshIndex,
    proxy: Workload,
    common: accesslog_pb2.AccessLogCommon,
    authority: str = "",
) -> Attributes:
    """reporter=source: ``proxy`` made the call."""
    source = peer_of(proxy)
    destination = Peer()
    labels = ServiceLabels()
    parts = common.upstream_cluster.split("|")
    service = None
    if len(parts) == 4 and parts[0] == "outbound":
        service = index.mesh.services_by_host.get(parts[3])
        labels = service_labels(service) if service else ServiceLabels(parts[3], parts[3])
    elif common.upstream_cluster in _SPECIAL_CLUSTERS:
        labels = _passthrough_service(common.upstream_cluster, authority)
    if service is not None:
        port = int(parts[1]) if parts[1].isdigit() else 0
        subset = parts[2]
        instances = index.cluster_instances(service, subset)
        chosen = _upstream_workload(index, common, instances)
        if chosen is not None:
            mtls = index.uses_mtls(service, port, subset, chosen)
            destination = peer_of(chosen, index.identity(chosen) if mtls else UNKNOWN)
            if mtls:
                source = peer_of(proxy, index.identity(proxy))
    return Attributes("source", source, destination, labels, "http")


def _upstream_workload(
    index: MeshIndex, common: accesslog_pb2.AccessLogCommon, instances: tuple[Workload, ...]
) -> Workload | None:
    claimed = peer_node_id(_metadata(common, UPSTREAM_PEER))
    if claimed:
        for workload in instances:
            if workload.id == claimed:
                return workload
    address = address_ip(common.upstream_remote_address)
    for workload in instances:
        if workload.address == address:
            return workload
    if instances and all(w.name == instances[0].name for w in instances):
        return instances[0]
    return None


def inbound_attributes(
    index: MeshIndex,
    proxy: Workload,
    common: accesslog_pb2.AccessLogCommon,
    authority: str = "",
) -> Attributes:
    """reporter=destination: ``proxy`` received the call."""
    principal = peer_certificate_uri(common)
    mtls = bool(principal)
    source = Peer(principal=principal or UNKNOWN)
    caller = _downstream_workload(index, common, principal)
    if caller is not None:
        source = peer_of(caller, principal or UNKNOWN)
    destination = peer_of(proxy, index.identity(proxy) if mtls else UNKNOWN)
    labels = ServiceLabels()
    parts = common.upstream_cluster.split("|")
    port = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else 0
    port = port or address_port(common.downstream_local_address)
    service = index.inbound_service(proxy, port, authority)
    if service is not None:
        labels = service_labels(service)
    return Attributes(
        "destination",
        source,
        destination,
        labels,
        "http",
        security="mutual_tls" if mtls else "none",
    )


def _downstream_workload(
    index: MeshIndex, common: accesslog_pb2.AccessLogCommon, principal: str
) -> Workload | None:
    claimed = index.mesh.workloads_by_id.get(peer_node_id(_metadata(common, DOWNSTREAM_PEER)))
    if claimed is not None and (not principal or index.identity(claimed) == principal):
        return claimed
    if principal:
        holders = index.workloads_by_identity.get(principal, ())
        return holders[0] if len(holders) == 1 else None
    return index.workloads_by_address.get(address_ip(common.downstream_remote_address))


def request_protocol(request: accesslog_pb2.HTTPRequestProperties) -> str:
    content_type = request.request_headers.get("content-type", "")
    return "grpc" if content_type.startswith("application/grpc") else "http"


def grpc_status(response: accesslog_pb2.HTTPResponseProperties) -> str:
    return str(
        response.response_trailers.get("grpc-status")
        or response.response_headers.get("grpc-status")
        or ""
    )
