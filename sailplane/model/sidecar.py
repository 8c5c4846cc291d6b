"""The ``Sidecar`` resource and the mesh-wide settings (Istio's MeshConfig).

Sidecar (istio.io/latest/docs/reference/config/networking/sidecar) scopes
what a proxy knows: ``egress.hosts`` (``namespace/host`` with ``*`` and
``.`` wildcards) lists the services it may reach; ``outboundTrafficPolicy``
says what happens to the rest (ALLOW_ANY: passed through; REGISTRY_ONLY:
502 from the BlackHoleCluster, as Istio answers). ``ingress`` replaces the
inbound listeners the workload's services would give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from sailplane.model.hosts import host_matches
from sailplane.model.locality import DEFAULT_LOCALITY_LB, LocalityLbSetting
from sailplane.model.registry import Protocol
from sailplane.model.source import Source

OutboundMode = Literal["ALLOW_ANY", "REGISTRY_ONLY"]
OUTBOUND_MODES: tuple[OutboundMode, ...] = get_args(OutboundMode)


@dataclass(frozen=True, slots=True)
class IngressTLS:
    """``ingress[].tls``: TLS terminated at the sidecar with certificates from
    files on the proxy's host (paths, never their contents). MUTUAL also
    requires a client certificate signed by ``ca_certificates``."""

    mode: Literal["SIMPLE", "MUTUAL"]
    server_certificate: str
    private_key: str
    ca_certificates: str = ""


@dataclass(frozen=True, slots=True)
class SidecarIngress:
    """``ingress[]``: an inbound listener on ``port`` that forwards to the app
    at ``endpoint_port`` on its own address (Istio's ``127.0.0.1:PORT`` and
    ``0.0.0.0:PORT`` both name the app), or to the unix socket ``unix_path``."""

    port: int
    protocol: Protocol
    name: str = ""
    endpoint_port: int = 0  # 0: the same port
    unix_path: str = ""
    tls: IngressTLS | None = None

    @property
    def served_protocol(self) -> Protocol:
        """The protocol behind TLS termination, as Istio's AfterTLSTermination."""
        if self.tls is None:
            return self.protocol
        return {Protocol.HTTPS: Protocol.HTTP, Protocol.TLS: Protocol.TCP}.get(
            self.protocol, self.protocol
        )


@dataclass(frozen=True, slots=True)
class Sidecar:
    name: str
    namespace: str
    source: Source
    selector: Mapping[str, str] = field(default_factory=dict)
    # (namespace pattern, host pattern); None = no egress section (see everything)
    egress_hosts: tuple[tuple[str, str], ...] | None = None
    outbound_mode: OutboundMode | None = None  # None: the mesh default
    # Explicit inbound listeners: when set, the workload's only ones (Istio's
    # default, without PILOT_ENABLE_SIDECAR_SERVICE_INBOUND_LISTENER_MERGE).
    ingress: tuple[SidecarIngress, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def allows(self, service_namespace: str, hostname: str) -> bool:
        """Whether ``hostname`` (of a service in ``service_namespace``) is in scope."""
        if self.egress_hosts is None:
            return True
        for namespace, host in self.egress_hosts:
            if namespace == "~":
                continue
            ns = self.namespace if namespace == "." else namespace
            if ns not in ("*", service_namespace):
                continue
            if host_matches(host, hostname):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Provider:
    """An ``extensionProviders`` entry: where telemetry goes."""

    name: str
    kind: str  # opentelemetry | zipkin | envoyFileAccessLog | envoyOtelAls | prometheus
    service: str = ""
    port: int = 0
    path: str = ""  # file access log path
    encoding: str = ""  # TEXT | JSON (file access log)
    format: str = ""
    log_name: str = ""  # envoyOtelAls logName
    # envoyOtelAls logFormat.labels: OpenTelemetry attributes (name, format string).
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """The subset of Istio's MeshConfig sailplane honours."""

    root_namespace: str = "istio-system"
    outbound_mode: OutboundMode = "ALLOW_ANY"
    access_log_file: str = ""  # "" = off; "/dev/stdout" as Istio's demo profile
    access_log_encoding: str = "TEXT"
    access_log_format: str = ""
    enable_tracing: bool = False
    tracing_sampling: float = 1.0  # percent, Istio's default
    extension_providers: tuple[Provider, ...] = ()
    default_tracing: tuple[str, ...] = ()
    default_access_logging: tuple[str, ...] = ()
    default_metrics: tuple[str, ...] = ()
    # localityLbSetting (None: turned off) and h2UpgradePolicy, Istio's defaults.
    locality_lb: LocalityLbSetting | None = DEFAULT_LOCALITY_LB
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    source: Source | None = None

    def provider(self, name: str) -> Provider | None:
        return next((p for p in self.extension_providers if p.name == name), None)
