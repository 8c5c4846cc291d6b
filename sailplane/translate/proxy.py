"""The proxy being configured: who it is and what it told us at connect time."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sailplane.errors import UnknownProxy
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import NOWHERE, Locality, Workload, selector_matches

DEFAULT_OUTBOUND_ADDRESS = ("127.0.0.1", 15001)
DEFAULT_APP_ADDRESS = "127.0.0.1"

# Node metadata keys written by `sailplane bootstrap`.
META_ROLE = "role"
META_OUTBOUND = "sailplane.outbound_address"
META_APP_ADDRESS = "sailplane.app_address"
# Istio's own key (proxy metadata INTERCEPTION_MODE): how traffic reaches the proxy.
META_INTERCEPTION = "INTERCEPTION_MODE"
# Istio's own key: ``GENERATOR: grpc`` marks a proxyless gRPC client
# (model.Proxy.IsProxylessGrpc), which gets grpcgen.py's resources.
META_GENERATOR = "GENERATOR"
GRPC_GENERATOR = "grpc"


class Role(enum.Enum):
    SIDECAR = "sidecar"
    GATEWAY = "gateway"


class Capture(enum.Enum):
    """How a sidecar gets its app's traffic. PROXY: the app uses the
    outbound listener as its HTTP_PROXY and inbound listeners bind the
    workload's ports (Istio's NONE). TRANSPARENT: iptables redirect
    (`sailplane capture`) to virtualOutbound 15001 / virtualInbound 15006
    (Istio's REDIRECT). The values are Istio's INTERCEPTION_MODE ones."""

    PROXY = "NONE"
    TRANSPARENT = "REDIRECT"


def parse_capture(value: object) -> Capture:
    """INTERCEPTION_MODE -> Capture; ValueError for TPROXY (not supported:
    it needs the listeners' ``transparent`` option and policy routing) or
    anything else."""
    text = str(value)
    if text == "TPROXY":
        raise ValueError("INTERCEPTION_MODE TPROXY is not supported (use REDIRECT or NONE)")
    try:
        return Capture(text)
    except ValueError:
        raise ValueError(f"INTERCEPTION_MODE {text!r} is not one of REDIRECT, NONE") from None


def parse_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``"127.0.0.1:15001"`` / ``"[::1]:15001"`` -> ``("127.0.0.1", 15001)``."""
    host, sep, port = value.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value, default_port
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Proxy:
    """One connected Envoy, as translation sees it."""

    workload: Workload
    role: Role = Role.SIDECAR
    outbound_address: tuple[str, int] = DEFAULT_OUTBOUND_ADDRESS
    app_address: str = DEFAULT_APP_ADDRESS
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # The SPIFFE identity the client certificate proved on the mTLS xDS port
    # (None on the plaintext port): the only identity whose secrets it gets.
    proven_identity: str | None = None
    # ``node.locality`` of its bootstrap: used only when the registry gives
    # its workload none (Istio's setTopologyLabels: the registry wins).
    node_locality: Locality = NOWHERE
    # Gateways ignore it: their listeners always bind their ports.
    capture: Capture = Capture.PROXY

    @property
    def id(self) -> str:
        return self.workload.id

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def locality(self) -> Locality:
        return self.workload.locality or self.node_locality

    @property
    def proxyless(self) -> bool:
        """A gRPC application's own xDS client, not an Envoy."""
        return str(self.metadata.get(META_GENERATOR, "")) == GRPC_GENERATOR


def workload_id(node_id: str) -> str:
    """The WorkloadEntry id a node id names: ``NAME.NS`` as is, and Istio's
    ``TYPE~IP~NAME.NS~NS.svc.DOMAIN`` (what gRPC bootstraps written for Istio
    carry) as its third part. Only the name is taken from it: what the node
    may have is still decided by that workload (and, on the mTLS port, by
    its certificate), never by the IP or domain it claims."""
    parts = node_id.split("~")
    if len(parts) != 4:
        return node_id
    _kind, _ip, name_ns, domain = parts
    namespace = name_ns.rpartition(".")[2]
    # A malformed Istio id (its domain's namespace is not the name's) is
    # refused below as an unknown workload, never guessed at.
    return name_ns if domain.startswith(f"{namespace}.svc.") else node_id


def bootstrap_metadata(workload: Workload) -> dict[str, str]:
    """The node metadata that matters to translation, as `sailplane bootstrap`
    writes it by default for ``workload``: for checking a configuration
    without a connected proxy (``sailplane validate``, debug dumps)."""
    mode = workload.interception_mode
    return {META_INTERCEPTION: mode} if mode else {}


def proxy_from_node(
    node_id: str,
    metadata: Mapping[str, Any],
    mesh: MeshConfig,
    node_locality: Locality = NOWHERE,
) -> Proxy:
    """Resolve an Envoy node (``name.namespace`` + metadata) against the mesh.

    Raises :class:`UnknownProxy` when no WorkloadEntry has that id, or the
    metadata is malformed, so the server can refuse the stream cleanly.
    Istio's ``sidecar~IP~NAME.NS~NS.svc.cluster.local`` is an alias of
    ``NAME.NS`` (:func:`workload_id`).
    """
    workload = mesh.workloads_by_id.get(workload_id(node_id))
    if workload is None:
        raise UnknownProxy(
            f"node {node_id!r} is not a WorkloadEntry of the mesh (expected NAME.NAMESPACE)"
        )
    try:
        if META_ROLE in metadata:
            role = Role(str(metadata[META_ROLE]))
        else:
            # A workload a Gateway selects is a gateway (istio: ingressgateway);
            # a gRPC application never is.
            selected = str(metadata.get(META_GENERATOR, "")) != GRPC_GENERATOR and any(
                g.selector and selector_matches(g.selector, workload.labels) for g in mesh.gateways
            )
            role = Role.GATEWAY if selected else Role.SIDECAR
        outbound = (
            parse_host_port(str(metadata[META_OUTBOUND]))
            if META_OUTBOUND in metadata
            else DEFAULT_OUTBOUND_ADDRESS
        )
        capture = (
            parse_capture(metadata[META_INTERCEPTION])
            if META_INTERCEPTION in metadata
            else Capture.PROXY
        )
    except ValueError as exc:
        raise UnknownProxy(f"node {node_id!r}: bad metadata: {exc}") from exc
    app_address = str(metadata.get(META_APP_ADDRESS, DEFAULT_APP_ADDRESS))
    return Proxy(
        workload, role, outbound, app_address, dict(metadata), None, node_locality, capture
    )
