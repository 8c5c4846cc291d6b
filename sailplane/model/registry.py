"""The service registry: services, their ports, and the workloads behind them.

Kubernetes ``v1 Service`` and Istio ``ServiceEntry`` both become a
:class:`Service`; ``WorkloadEntry`` objects become :class:`Workload`. A
service's instances are the workloads its selector matches, plus the
endpoints a ServiceEntry lists inline.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from sailplane.model.source import Source


class Protocol(enum.Enum):
    """Istio's port protocols (istio.io: "Protocol Selection")."""

    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "MONGO"
    REDIS = "REDIS"
    MYSQL = "MYSQL"
    UNKNOWN = "UNKNOWN"

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC)

    @classmethod
    def from_port(cls, protocol: str | None, name: str) -> Protocol:
        """Explicit protocol first, then Istio's port-name prefix convention
        (``http-web``, ``grpc``); anything else is plain TCP."""
        if protocol:
            candidate = protocol.upper()
            if candidate in cls.__members__ and candidate not in ("TCP", "UDP", "SCTP"):
                return cls[candidate]
            if candidate != "TCP":
                return cls.UNKNOWN
        prefix = name.split("-", 1)[0].upper()
        if prefix in cls.__members__:
            return cls[prefix]
        return cls.TCP if protocol else cls.UNKNOWN


class Location(enum.Enum):
    MESH_INTERNAL = "MESH_INTERNAL"
    MESH_EXTERNAL = "MESH_EXTERNAL"


class Resolution(enum.Enum):
    NONE = "NONE"
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str
    protocol: Protocol
    # Kubernetes targetPort / ServiceEntry targetPort; None = same as number.
    target_port: int | None = None


# Istio's locality labels (pilot/pkg/serviceregistry/util/label, istio.io/api label).
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
LOCALITY_LABELS = ("topology.istio.io/locality", "istio-locality")


@dataclass(frozen=True, slots=True, order=True)
class Locality:
    """Where an instance or a proxy runs: ``region/zone/subzone`` (Envoy's
    ``core.Locality``). Empty when unknown."""

    region: str = ""
    zone: str = ""
    subzone: str = ""

    @classmethod
    def parse(cls, label: str) -> Locality:
        """``"us-east/us-east-1a/rack1"`` (Istio's SplitLocalityLabel)."""
        if not label:
            return cls()
        region, zone, subzone = [*label.split("/"), "", ""][:3]
        return cls(region, zone, subzone)

    @property
    def label(self) -> str:
        """The ``/`` form, trailing empty parts dropped (LocalityToString)."""
        if not self.zone:
            return self.region
        return f"{self.region}/{self.zone}" + (f"/{self.subzone}" if self.subzone else "")

    def __bool__(self) -> bool:
        return bool(self.region or self.zone or self.subzone)

    def topology_labels(self) -> dict[str, str]:
        """The labels Istio adds to a workload's for its locality (AugmentLabels)."""
        pairs = (
            (REGION_LABEL, self.region),
            (ZONE_LABEL, self.zone),
            (SUBZONE_LABEL, self.subzone),
        )
        return {k: v for k, v in pairs if v}


NOWHERE = Locality()  # unknown locality (the default)


def workload_locality(written: str, labels: Mapping[str, str]) -> Locality:
    """An instance's locality as Istio finds it: the WorkloadEntry's
    ``locality``; else the ``topology.istio.io/locality`` (or legacy
    ``istio-locality``) label, ``.`` read as ``/`` (SanitizeLocalityLabel);
    else the Kubernetes topology labels, which Istio reads from the pod's
    node and sailplane from the workload's own labels."""
    if written:
        return Locality.parse(written)
    for name in LOCALITY_LABELS:
        value = labels.get(name)
        if value is not None:
            return Locality.parse(value if "/" in value else value.replace(".", "/"))
    return Locality(
        labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, ""), labels.get(SUBZONE_LABEL, "")
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service, from a WorkloadEntry or a ServiceEntry endpoint."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # Service port name -> this instance's port (Istio's WorkloadEntry.ports).
    ports: Mapping[str, int] = field(default_factory=dict)
    weight: int = 1
    service_account: str = ""
    workload: str = ""  # "name.namespace" of the WorkloadEntry, if any
    locality: Locality = NOWHERE

    def port_for(self, port: ServicePort) -> int:
        """The port this instance serves ``port`` on (Istio semantics: ``ports``
        maps the service port *name*; otherwise targetPort, otherwise the number)."""
        mapped = self.ports.get(port.name)
        if mapped:
            return mapped
        return port.target_port or port.number


@dataclass(frozen=True, slots=True)
class Service:
    """A host the mesh can route to."""

    hostname: str  # FQDN, e.g. weather-backend.default.svc.cluster.local
    namespace: str
    name: str  # the object's name (for a Kubernetes Service, the short host)
    kind: str  # "Service" or "ServiceEntry"
    ports: tuple[ServicePort, ...]
    source: Source
    selector: Mapping[str, str] | None = None
    endpoints: tuple[Endpoint, ...] = ()
    location: Location = Location.MESH_INTERNAL
    resolution: Resolution = Resolution.STATIC
    addresses: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ("*",)

    @property
    def short_name(self) -> str | None:
        """The Kubernetes short name, when the host is ``NAME.NS.svc.DOMAIN``."""
        parts = self.hostname.split(".")
        if len(parts) > 3 and parts[1] == self.namespace and parts[2] == "svc":
            return parts[0]
        return None


@dataclass(frozen=True, slots=True)
class StatsInclusion:
    """Envoy stats a proxy keeps beyond the default set, from Istio's
    ``sidecar.istio.io/statsInclusion{Prefixes,Suffixes,Regexps}``
    annotations (comma-separated), e.g. ``cluster.outbound`` for the
    per-cluster counters of the mesh's outbound clusters."""

    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    regexps: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.prefixes or self.suffixes or self.regexps)


NO_STATS_INCLUSION = StatsInclusion()


@dataclass(frozen=True, slots=True)
class Workload:
    """A WorkloadEntry: one instance of an application, usually with a sidecar."""

    name: str
    namespace: str
    address: str
    source: Source
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    service_account: str = "default"
    weight: int = 1
    locality: Locality = NOWHERE
    # Its ``sidecar.istio.io/interceptionMode`` annotation (REDIRECT or NONE;
    # "" when absent): the capture mode `sailplane bootstrap` writes by default.
    interception_mode: str = ""
    # Extra Envoy stats its proxy keeps (the statsInclusion* annotations).
    stats_inclusion: StatsInclusion = NO_STATS_INCLUSION
    # Derived once: both are asked for millions of times in a large mesh, and
    # one Endpoint object per workload lets unchanged instance lists compare
    # by identity.
    id: str = field(init=False, repr=False, compare=False)
    """The Envoy node id of this workload's proxy: ``name.namespace``."""
    _endpoint: Endpoint = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        node_id = f"{self.name}.{self.namespace}"
        object.__setattr__(self, "id", node_id)
        endpoint = Endpoint(
            address=self.address,
            labels=self.labels,
            ports=self.ports,
            weight=self.weight,
            service_account=self.service_account,
            workload=node_id,
            locality=self.locality,
        )
        object.__setattr__(self, "_endpoint", endpoint)

    def endpoint(self) -> Endpoint:
        return self._endpoint


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Kubernetes equality selector. An empty selector matches nothing for a
    Service (Kubernetes: no selector = no managed endpoints)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def subset_endpoints(
    endpoints: tuple[Endpoint, ...], labels: Mapping[str, str] | None
) -> tuple[Endpoint, ...]:
    """A subset's instances: those whose labels include the subset's (all, for none)."""
    if not labels:
        return endpoints
    return tuple(e for e in endpoints if selector_matches(labels, e.labels))
