"""The inbound side of transparent capture (Istio's REDIRECT interception).

iptables (``sailplane capture``) redirects every inbound TCP connection of
the pod to 15006. ``virtualInbound`` listens there, recovers the original
destination (``envoy.filters.listener.original_dst``) and picks a filter
chain by destination port, as Istio's listener_inbound.go
(buildInboundListeners / inboundVirtualListener) does:

* one set of chains per inbound port, the same chains the bound listener of
  proxy mode has (listeners.inbound_chains: PeerAuthentication mode per
  port, HTTP over RDS with authorization, TCP with network RBAC, Sidecar
  ingress, JWT, telemetry), each with ``destination_port`` set; but a
  port of unknown protocol, HTTP-only in proxy mode, is sniffed as Istio
  does (mtls.sniffed_filter_chains): an HTTP chain for what http_inspector
  (plaintext) or the client sidecar's ALPN (mTLS) says is HTTP, a TCP
  chain for the rest (raw TCP, server-first protocols after the listener
  filters' timeout, below); http_inspector runs for those ports only;
* Istio's passthrough chains (buildInboundPassthroughChains) for ports no
  service declares: a tcp_proxy to ``InboundPassthroughCluster``
  (ORIGINAL_DST) under the workload's port-less PeerAuthentication mode,
  so STRICT refuses plaintext there too (no chain matches raw_buffer and
  the connection is closed), with the workload's network RBAC; and, as
  Istio's ForPassthrough / needPerPortPassthroughFilterChain, the same
  chains on their ``destination_port`` under that port's mode for each
  port the workload's PeerAuthentication sets (``portLevelMtls``) that no
  service (or Sidecar ingress) declares;
* Istio's ``virtualInbound-blackhole`` chain for a connection whose original
  destination is 15006 itself, which would otherwise be passed through to
  the same port again and again.

The sidecar's own connections to its app come from 127.0.0.6 (loopguard.py)
and iptables never redirects that source nor the proxy's uid, so they reach
the app directly; no listener binds the app's port, so with the app down
they are refused rather than looped. The loop-guard twin chains of proxy
mode therefore have nothing to catch here and are left out.

Inbound clusters are ORIGINAL_DST, as Istio's buildInboundCluster (no bind
address): the proxy connects to the address the caller dialled, the pod's
IP and port, from 127.0.0.6, so the app listens on ``0.0.0.0:PORT`` as it
would without a mesh and sees the connection addressed to its own IP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from sailplane.model.authz import AuthorizationPolicy
from sailplane.model.hosts import is_ip_address
from sailplane.model.registry import Protocol
from sailplane.model.sidecar import SidecarIngress
from sailplane.model.telemetry import WorkloadTelemetry
from sailplane.translate.authz import network_rbac_filters
from sailplane.translate.clusters import build_inbound_cluster
from sailplane.translate.common import duration, pack, socket_address
from sailplane.translate.egress import original_dst_cluster
from sailplane.translate.listeners import (
    blackhole_chain,
    http_inspector,
    inbound_chains,
    tcp_proxy_chain,
    tls_inspector,
)
from sailplane.translate.loopguard import upstream_bind
from sailplane.translate.mtls import PLAINTEXT_HTTP_ALPNS, inbound_filter_chains
from sailplane.translate.proxy import Proxy

VIRTUAL_INBOUND = "virtualInbound"  # Istio's VirtualInboundListenerName
INBOUND_CAPTURE_PORT = 15006  # Istio's MeshConfig.proxyInboundListenPort
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
BLACKHOLE_CHAIN = "virtualInbound-blackhole"  # Istio's VirtualInboundBlackholeFilterChainName
PASSTHROUGH_STAT_PREFIX = "inbound_passthrough"
INSPECT_TIMEOUT_S = 15.0  # Envoy's default listener_filters_timeout, see below
_PLAINTEXT = list(PLAINTEXT_HTTP_ALPNS)


def _original_dst_bind(proxy: Proxy, name: str) -> cluster_pb2.Cluster:
    cluster = original_dst_cluster(name)
    address = proxy.workload.address
    # 127.0.0.6 for an IPv4 pod (and a pod named by DNS: IPv4 in compose).
    bind = upstream_bind(address if is_ip_address(address) else "0.0.0.0")
    if bind is not None:
        cluster.upstream_bind_config.CopyFrom(bind)
    return cluster


def inbound_passthrough_cluster(proxy: Proxy) -> cluster_pb2.Cluster:
    """Istio's buildInboundPassthroughCluster: the original destination,
    connected to from 127.0.0.6 so iptables lets it through."""
    return _original_dst_bind(proxy, INBOUND_PASSTHROUGH_CLUSTER)


def transparent_inbound_cluster(
    proxy: Proxy, workload_port: int, protocol: Protocol
) -> cluster_pb2.Cluster:
    """``inbound|PORT||`` as Istio's buildInboundCluster without a bind
    address: ORIGINAL_DST, from 127.0.0.6, with the upstream HTTP protocol
    of proxy mode's inbound cluster."""
    cluster = build_inbound_cluster(workload_port, "127.0.0.1", protocol)
    cluster.ClearField("load_assignment")
    cluster.ClearField("upstream_bind_config")
    # Envoy's default cleanup_interval (5 s) is kept: Istio's "never" (its
    # maxSecondsValue) is a duration Envoy 1.40 refuses.
    cluster.MergeFrom(_original_dst_bind(proxy, cluster.name))
    return cluster


def _on_port(
    chains: Sequence[listener_components_pb2.FilterChain], port: int
) -> list[listener_components_pb2.FilterChain]:
    for chain in chains:
        chain.filter_chain_match.destination_port.CopyFrom(wrappers_pb2.UInt32Value(value=port))
        chain.name = f"{port}-{chain.name}"
    return list(chains)


def _passthrough_chains(
    proxy: Proxy,
    mode: str,
    trust_domain: str,
    policies: Sequence[AuthorizationPolicy],
    telemetry: WorkloadTelemetry | None,
) -> tuple[list[listener_components_pb2.FilterChain], bool]:
    def filters(tls: bool) -> list[listener_components_pb2.Filter]:
        chain = tcp_proxy_chain("", INBOUND_PASSTHROUGH_CLUSTER, proxy, telemetry, outbound=False)
        return [
            *network_rbac_filters(list(policies), PASSTHROUGH_STAT_PREFIX),
            *chain.filters,
        ]

    chains, inspect = inbound_filter_chains(mode, trust_domain, filters, plain_tls=True)
    for chain in chains:
        chain.name = f"passthrough-{chain.name}"
    return chains, inspect


def build_virtual_inbound(
    proxy: Proxy,
    ports: Mapping[int, Protocol],
    modes: Mapping[int, str],
    passthrough_mode: str,
    trust_domain: str,
    policies: Sequence[AuthorizationPolicy] = (),
    telemetry: WorkloadTelemetry | None = None,
    ingress: Mapping[int, SidecarIngress] | None = None,
    jwt: Sequence[hcm_pb2.HttpFilter] = (),
    passthrough_ports: Mapping[int, str] | None = None,
) -> listener_pb2.Listener:
    """``virtualInbound`` on 0.0.0.0:15006 with the chains described above.
    ``modes``: each port's PeerAuthentication mode; ``passthrough_mode``:
    the workload's mode for ports no service declares, but for those in
    ``passthrough_ports`` (port-level modes, see the module)."""
    ingress = ingress or {}
    chains, inspect = _passthrough_chains(
        proxy, passthrough_mode, trust_domain, policies, telemetry
    )
    for port, mode in sorted((passthrough_ports or {}).items()):
        port_chains, port_inspect = _passthrough_chains(
            proxy, mode, trust_domain, policies, telemetry
        )
        chains.extend(_on_port(port_chains, port))
        inspect = inspect or port_inspect
    chains.insert(
        0,
        blackhole_chain(BLACKHOLE_CHAIN, INBOUND_CAPTURE_PORT, proxy, telemetry, outbound=False),
    )
    sniffed: list[int] = []
    for port, protocol in ports.items():
        entry = ingress.get(port)
        port_chains, port_inspect = inbound_chains(
            proxy,
            port,
            protocol,
            modes[port],
            trust_domain,
            policies,
            telemetry,
            entry.tls if entry is not None else None,
            jwt,
            sniff=True,
        )
        if any(c.filter_chain_match.application_protocols == _PLAINTEXT for c in port_chains):
            sniffed.append(port)
        chains.extend(_on_port(port_chains, port))
        inspect = inspect or port_inspect
    listener = listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address("0.0.0.0", INBOUND_CAPTURE_PORT),
        traffic_direction=1,  # INBOUND
        filter_chains=chains,
        # A server-first protocol on a PERMISSIVE port sends nothing for
        # the TLS inspector to read: after this long it gets the plaintext
        # chain. Istio sets its protocolDetectionTimeout here, 0 by default,
        # which is no timeout at all (such a client waits forever); Envoy's
        # default, 15 s, is kept and said, so it works, slowly. For such
        # a port, set STRICT or DISABLE (portLevelMtls): no inspector waits.
        listener_filters_timeout=duration(INSPECT_TIMEOUT_S),
        continue_on_listener_filters_timeout=True,
        drain_type=listener_pb2.Listener.DEFAULT,
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.original_dst",
                typed_config=pack(original_dst_pb2.OriginalDst()),
            )
        ],
    )
    if inspect:
        listener.listener_filters.append(tls_inspector())
    if sniffed:
        # After the TLS inspector: it skips what that one found to be TLS.
        listener.listener_filters.append(http_inspector(sniffed))
    return listener
