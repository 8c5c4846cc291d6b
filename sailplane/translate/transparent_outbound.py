"""The outbound side of transparent capture (Istio's REDIRECT interception).

iptables sends the app's outbound TCP to 15001. There, as Istio builds it
(pilot/pkg/networking/core/listener_builder.go, buildVirtualOutboundListener
and buildOutboundCatchAllNetworkFilterChains), ``virtualOutbound`` binds
0.0.0.0:15001 with ``use_original_dst``: Envoy hands each connection to the
listener of its original destination, which here is ``0.0.0.0_PORT`` per
service port (``bind_to_port: false``, Istio's name for a listener without
a VIP). What no listener takes stays on ``virtualOutbound``: to the
``PassthroughCluster`` under ALLOW_ANY, to the ``BlackHoleCluster`` under
REGISTRY_ONLY (the mesh's or the Sidecar's outboundTrafficPolicy), and a
connection to 15001 itself always to the black hole.

Per port (listener.go, buildSidecarOutboundListeners):

* HTTP ports: one HTTP connection manager on the proxy's outbound route
  table, the very one the HTTP-proxy mode uses (routes by Host; its
  catch-all is the outbound traffic policy's).
* TCP and TLS ports: filter chains from tcproute.py, by destination address
  where the service's addresses are known (TCP: its ServiceEntry addresses,
  else the IP addresses of its instances, there being no VIPs; TLS: its
  ServiceEntry addresses only) and by SNI on TLS ports; where two
  services cannot be told apart the first (hostname order) wins, as
  Istio's TCP-over-TCP conflict keeps the listener it had
  (pilot_conflict_outbound_listener_tcp_over_current_tcp), and ``notes``
  says which was left out. What no chain matches takes the traffic policy's
  way (Istio's passthrough ``default_filter_chain``).
* A port with both, or of unknown protocol (no name prefix, no
  appProtocol): Istio's sniffing (HTTPOverTCP, AUTO): http_inspector, the
  HTTP chain for what it says is HTTP, the TCP chains for the rest (a
  sniffed service's TCP chain is a TCP port's). Envoy matches the
  destination address before the application protocol, so a sniffed
  service's addresses get an HTTP chain of their own too. A client that
  sends nothing (a server-first protocol) is TCP after SNIFF_TIMEOUT_S.
  On a sniffed port the HCM asks for Istio's mtlsHTTPALPNs on the mTLS it
  originates (Istio's istio.alpn filter; here set_filter_state): the
  server sidecar, sniffing too, tells HTTP from TCP by them.

``PassthroughCluster``: Istio's is ORIGINAL_DST; the mesh-wide one (egress.py)
is a dynamic forward proxy, for the HTTP-proxy mode where there is no
original destination. A transparent sidecar gets its own ORIGINAL_DST
cluster of that same name, replacing the shared one for it alone: the shared
route table's ``allow_any`` route then reaches the original destination in
transparent mode and the Host in proxy mode, so one table (one routes_key)
serves both, and telemetry counts both as Istio's PassthroughCluster. The
table's CONNECT routes (connect.py) never name it: they tunnel to the
CONNECT authority's host (egress.connect_authority_cluster) in both modes,
not to whatever address a captured app dialled.
IPv4 only: the listeners bind 0.0.0.0.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailplane.model.hosts import is_ip_address
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Protocol, Service, ServicePort
from sailplane.model.telemetry import WorkloadTelemetry
from sailplane.translate import names
from sailplane.translate.common import HCM_FILTER, TCP_PROXY, duration, pack, socket_address
from sailplane.translate.egress import (
    BLACKHOLE_CLUSTER,
    PASSTHROUGH_CLUSTER,
    original_dst_cluster,
)
from sailplane.translate.listeners import (
    blackhole_chain,
    http_connection_manager,
    http_inspector,
    network_filter,
    tcp_proxy_chain,
    tls_inspector,
)
from sailplane.translate.mtls import MTLS_HTTP_ALPNS, PLAINTEXT_HTTP_ALPNS
from sailplane.translate.proxy import Proxy
from sailplane.translate.routes import exported_to
from sailplane.translate.tcproute import TLS_PROTOCOLS, L4Chain, tcp_chains, tls_chains
from sailplane.translate.telemetry import decorate_http, decorate_tcp
from sailplane.translate.transparent_inbound import INBOUND_CAPTURE_PORT

Listener: TypeAlias = listener_pb2.Listener
Cluster: TypeAlias = cluster_pb2.Cluster
FilterChain: TypeAlias = listener_components_pb2.FilterChain

VIRTUAL_OUTBOUND = "virtualOutbound"  # Istio's model.VirtualOutboundListenerName
WILDCARD = "0.0.0.0"
# Sniffing a port: how long to wait for a client's first bytes before
# taking it for TCP (server-first protocols send nothing). Istio's
# protocolDetectionTimeout is 0 by default, no timeout: a server-first
# client of an unnamed port waits forever (its docs: name such ports).
SNIFF_TIMEOUT_S = 1.0
# The ALPN a sniffed port's HTTP asks its mTLS to offer (mtls.py).
_HTTP_ALPN_STATE = "envoy.network.application_protocols"


@dataclass(frozen=True)
class TransparentOutbound:
    """What a transparent sidecar gets instead of the HTTP-proxy listener:
    its outbound listeners, the clusters only it needs, and what a reader
    should know (services left out of a port they share, see the module)."""

    listeners: tuple[Listener, ...]
    clusters: tuple[Cluster, ...]
    notes: tuple[str, ...] = ()


def build_virtual_outbound(
    proxy: Proxy, telemetry: WorkloadTelemetry | None, catch_all: str
) -> Listener:
    """``virtualOutbound``: hands connections to the listener of their
    original destination; keeps the rest for ``catch_all``."""
    port = proxy.outbound_address[1]
    return Listener(
        name=VIRTUAL_OUTBOUND,
        address=socket_address(WILDCARD, port),
        use_original_dst={"value": True},
        traffic_direction=2,  # OUTBOUND
        filter_chains=[
            blackhole_chain(f"{VIRTUAL_OUTBOUND}-blackhole", port, proxy, telemetry, True),
            tcp_proxy_chain(f"{VIRTUAL_OUTBOUND}-catchall-tcp", catch_all, proxy, telemetry, True),
        ],
    )


def _cidr(value: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(value, strict=False)
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address), prefix_len={"value": network.prefixlen}
    )


def service_addresses(mesh: MeshConfig, service: Service) -> tuple[str, ...]:
    """Where a client's connection to ``service`` goes: its ServiceEntry
    addresses, else the IP addresses of its instances (no VIPs here: a
    client reaches an instance directly, as DNS would lead it); () when
    neither is known (instances named by DNS)."""
    if service.addresses:
        return tuple(sorted(set(service.addresses)))
    found = {e.address for e in mesh.endpoints_of(service) if is_ip_address(e.address)}
    return tuple(sorted(found))


def visible_ports(mesh: MeshConfig, proxy: Proxy) -> dict[int, list[tuple[Service, ServicePort]]]:
    """Service port number -> the services the proxy may reach on it
    (``exportTo`` and its Sidecar's egress hosts), in hostname order."""
    sidecar = mesh.sidecar_for(proxy.workload)
    ports: dict[int, list[tuple[Service, ServicePort]]] = {}
    for service in sorted(mesh.services, key=lambda s: s.hostname):
        if not exported_to(service.export_to, service.namespace, proxy.namespace):
            continue
        if sidecar is not None and not sidecar.allows(service.namespace, service.hostname):
            continue
        for port in service.ports:
            # The capture ports are the proxy's own (virtualOutbound/Inbound bind them).
            if port.number not in (proxy.outbound_address[1], INBOUND_CAPTURE_PORT):
                ports.setdefault(port.number, []).append((service, port))
    return dict(sorted(ports.items()))


def _l4_chains(
    mesh: MeshConfig, proxy: Proxy, entries: Sequence[tuple[Service, ServicePort]]
) -> tuple[list[L4Chain], list[str], set[str]]:
    """The TCP/TLS chains of a port (sniffed services' too), the notes, and
    the addresses of the sniffed services' chains. Envoy refuses two
    chains that match a destination address and SNI alike, so the first
    chain to match one keeps it (Istio: the listener it had wins); a later
    chain loses it, or is left out when nothing is left, with a note."""
    sidecar = mesh.sidecar_for(proxy.workload)
    labels, namespace = proxy.workload.labels, proxy.namespace
    chains: list[L4Chain] = []
    taken: dict[tuple[str, str], str] = {}  # (CIDR or "", SNI or "") -> who has it
    notes: list[str] = []
    sniffed: set[str] = set()
    for service, port in entries:
        if port.protocol.is_http:
            continue
        if port.protocol in TLS_PROTOCOLS:
            # SNI tells TLS services apart; an instance's address is not
            # where a client of a TLS host connects (as Istio: VIPs only).
            build, cidrs = tls_chains, tuple(sorted(set(service.addresses)))
        else:
            build, cidrs = tcp_chains, service_addresses(mesh, service)
        for chain in build(mesh, service, port, cidrs, labels, namespace, sidecar):
            if chain in chains:
                continue  # one rule for several hosts of the port: once
            keep, lost = _unclaimed(chain, taken)
            if lost:
                owners = sorted({taken[k] for k in lost})
                what = (
                    "is left out"
                    if keep is None
                    else f"loses {sorted({c or '*' for c, _ in lost})}"
                )
                notes.append(
                    f"port {port.number}: {chain.source} ({service.hostname}) {what}: "
                    f"{', '.join(owners)} takes the same connections"
                )
            if keep is not None:
                taken.update(dict.fromkeys(_claims(keep), keep.source))
                chains.append(keep)
                if port.protocol is Protocol.UNKNOWN:
                    sniffed.update(keep.cidrs)
    return chains, notes, sniffed


def _claims(chain: L4Chain) -> list[tuple[str, str]]:
    snis = [s for s in chain.sni if s != "*"] or [""]
    cidrs = [str(ipaddress.ip_network(c, strict=False)) for c in chain.cidrs] or [""]
    return [(c, s) for c in cidrs for s in snis]


def _unclaimed(
    chain: L4Chain, taken: Mapping[tuple[str, str], str]
) -> tuple[L4Chain | None, list[tuple[str, str]]]:
    """``chain`` without the addresses already matched alike (None when
    none is left), and the (address, SNI) pairs it lost."""
    lost = [k for k in _claims(chain) if k in taken]
    if not lost:
        return chain, []
    gone = {c for c, _ in lost}
    cidrs = tuple(c for c in chain.cidrs if str(ipaddress.ip_network(c, strict=False)) not in gone)
    if not chain.cidrs or not cidrs:
        return None, lost
    return dataclasses.replace(chain, cidrs=cidrs), lost


def _filter_chain(chain: L4Chain, proxy: Proxy, telemetry: WorkloadTelemetry | None) -> FilterChain:
    tcp = tcp_proxy_pb2.TcpProxy()
    tcp.CopyFrom(chain.tcp)
    decorate_tcp(tcp, proxy, telemetry, outbound=True)
    out = FilterChain(name=chain.source, filters=[network_filter(TCP_PROXY, tcp)])
    out.filter_chain_match.prefix_ranges.extend(_cidr(c) for c in sorted(chain.cidrs))
    out.filter_chain_match.server_names.extend(sorted(s for s in chain.sni if s != "*"))
    return out


def _http_alpn_filter() -> hcm_pb2.HttpFilter:
    """Istio's istio.alpn: the upstream mTLS of this request offers
    mtlsHTTPALPNs, so a sniffing server sidecar takes it for HTTP."""
    value = value_pb2.FilterStateValue(
        object_key=_HTTP_ALPN_STATE,
        format_string=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=",".join(MTLS_HTTP_ALPNS))
        ),
        shared_with_upstream=value_pb2.FilterStateValue.ONCE,
    )
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.set_filter_state",
        typed_config=pack(set_filter_state_pb2.Config(on_request_headers=[value])),
    )


def _http_chains(
    name: str, proxy: Proxy, telemetry: WorkloadTelemetry | None, sniff: bool, cidrs: set[str]
) -> list[FilterChain]:
    """The HTTP chain(s) of a port: on the shared outbound route table, by
    Host. Sniffing, they take what http_inspector says is HTTP: one for
    any address, one for the sniffed services' own (see the module)."""
    route = names.OUTBOUND_ROUTE_NAME
    extra = [_http_alpn_filter()] if sniff else []
    manager = http_connection_manager(f"outbound_{name}", route, extra)
    decorate_http(manager, proxy, telemetry, outbound=True)
    chain = FilterChain(name=f"{name}-http", filters=[network_filter(HCM_FILTER, manager)])
    if not sniff:
        return [chain]
    chain.filter_chain_match.application_protocols.extend(PLAINTEXT_HTTP_ALPNS)
    chains = [chain]
    if cidrs:
        own = FilterChain()
        own.CopyFrom(chain)
        own.name = f"{name}-http-sniffed"
        own.filter_chain_match.prefix_ranges.extend(_cidr(c) for c in sorted(cidrs))
        chains.append(own)
    return chains


def build_port_listener(
    mesh: MeshConfig,
    proxy: Proxy,
    telemetry: WorkloadTelemetry | None,
    number: int,
    entries: Sequence[tuple[Service, ServicePort]],
    catch_all: str,
) -> tuple[Listener, list[str]]:
    """``0.0.0.0_PORT``: reached only through virtualOutbound."""
    name = names.listener_name(WILDCARD, number)
    http = any(p.protocol.is_http or p.protocol is Protocol.UNKNOWN for _, p in entries)
    l4, notes, sniffed = _l4_chains(mesh, proxy, entries)
    listener = Listener(
        name=name,
        address=socket_address(WILDCARD, number),
        bind_to_port={"value": False},
        traffic_direction=2,  # OUTBOUND
    )
    listener.filter_chains.extend(_filter_chain(c, proxy, telemetry) for c in l4)
    if http:
        sniff = bool(l4)  # Istio's HTTPOverTCP / AUTO
        listener.filter_chains.extend(_http_chains(name, proxy, telemetry, sniff, sniffed))
        if sniff:
            listener.listener_filters.append(http_inspector())
            listener.listener_filters_timeout.CopyFrom(duration(SNIFF_TIMEOUT_S))
            listener.continue_on_listener_filters_timeout = True
    if any(c.sni for c in l4):
        listener.listener_filters.insert(0, tls_inspector())
    if l4:
        # What no chain matches: another address on this port.
        listener.default_filter_chain.CopyFrom(
            tcp_proxy_chain(f"{name}-default", catch_all, proxy, telemetry, True)
        )
    return listener, notes


def build_transparent_outbound(
    mesh: MeshConfig, proxy: Proxy, telemetry: WorkloadTelemetry | None
) -> TransparentOutbound:
    """Listeners (and the clusters only this proxy needs) for outbound capture."""
    mode = mesh.outbound_mode(proxy.workload)
    catch_all = BLACKHOLE_CLUSTER if mode == "REGISTRY_ONLY" else PASSTHROUGH_CLUSTER
    listeners = [build_virtual_outbound(proxy, telemetry, catch_all)]
    notes: list[str] = []
    for number, entries in visible_ports(mesh, proxy).items():
        listener, port_notes = build_port_listener(
            mesh, proxy, telemetry, number, entries, catch_all
        )
        listeners.append(listener)
        notes.extend(port_notes)
    return TransparentOutbound(
        listeners=tuple(sorted(listeners, key=lambda x: x.name)),
        clusters=(original_dst_cluster(PASSTHROUGH_CLUSTER),),
        notes=tuple(notes),
    )
