"""The sidecar's guard against its inbound traffic looping back to itself.

A sidecar whose inbound listener binds ``0.0.0.0:PORT`` in front of an app
on ``127.0.0.1:PORT`` (both with SO_REUSEPORT, as in the compose pods)
relies on Linux giving each connection to the most specific socket. While
the app is down the most specific one left for ``127.0.0.1:PORT`` is the
sidecar's own listener: a request would go round the inbound cluster again
and again until its caller gave up. As Istio does, inbound clusters connect
from 127.0.0.6 (its InboundPassthroughBindIpv4), so the proxy's own
connections are recognisable, and every inbound listener refuses them.

The refusal is a filter chain, not a filter in each chain: the network RBAC
filter decides on the first byte, but a TCP port's tcp_proxy connects
upstream as soon as a connection is accepted, so the loop would spin on
before any byte arrived. Envoy picks the chain with the most specific
direct source address among those matching the rest, so each chain gets a
twin with the same match plus 127.0.0.6/32, whose tcp_proxy to the
BlackHoleCluster (no endpoints) closes the connection at once and counts it
in ``tcp.inbound_PORT.loop_guard.downstream_cx_total``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from sailplane.translate.common import TCP_PROXY, pack
from sailplane.translate.egress import BLACKHOLE_CLUSTER

# Istio's InboundPassthroughBindIpv4 ("6 is the magical number for inbound").
INBOUND_SOURCE_IPV4 = "127.0.0.6"


def upstream_bind(app_address: str) -> address_pb2.BindConfig | None:
    """Where an inbound cluster's connections come from: 127.0.0.6 for an
    IPv4 app. None for an IPv6 one: ``::6`` (Istio's) is no address of a
    Linux host unless someone assigns it, and a bind to it would fail."""
    try:
        ipaddress.IPv4Address(app_address)
    except ValueError:
        return None
    return address_pb2.BindConfig(
        source_address=address_pb2.SocketAddress(address=INBOUND_SOURCE_IPV4, port_value=0)
    )


def loop_guard_stat_prefix(workload_port: int) -> str:
    return f"inbound_{workload_port}.loop_guard"


def with_loop_guards(
    chains: Iterable[listener_components_pb2.FilterChain], workload_port: int
) -> list[listener_components_pb2.FilterChain]:
    """``chains`` and, for each, a twin that takes the connections the
    proxy itself makes from 127.0.0.6 and closes them (see above)."""
    chains = list(chains)
    refuse = listener_components_pb2.Filter(
        name=TCP_PROXY,
        typed_config=pack(
            tcp_proxy_pb2.TcpProxy(
                stat_prefix=loop_guard_stat_prefix(workload_port), cluster=BLACKHOLE_CLUSTER
            )
        ),
    )
    guards = []
    for chain in chains:
        match = listener_components_pb2.FilterChainMatch()
        match.CopyFrom(chain.filter_chain_match)
        match.direct_source_prefix_ranges.append(
            address_pb2.CidrRange(
                address_prefix=INBOUND_SOURCE_IPV4, prefix_len=wrappers_pb2.UInt32Value(value=32)
            )
        )
        guards.append(
            listener_components_pb2.FilterChain(
                name=f"{chain.name}-loop-guard", filter_chain_match=match, filters=[refuse]
            )
        )
    return [*chains, *guards]
