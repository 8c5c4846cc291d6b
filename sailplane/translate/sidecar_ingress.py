"""Sidecar ``ingress``: explicit inbound listeners (Istio's
pilot/pkg/networking/core/listener_inbound.go buildInboundChainConfigs and
cluster.go buildInboundClustersFromSidecar).

With ingress listeners the workload's services no longer decide its inbound
ports: each ingress entry is one, with its own protocol, forwarding to its
``defaultEndpoint`` through ``inbound|PORT||``. Its ``tls`` terminates TLS
with the given certificate files where the port's PeerAuthentication mode
is DISABLE (elsewhere mTLS applies, as in Istio), and the listener then
serves the protocol behind TLS (HTTPS as HTTP, TLS as TCP).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import ServerTLS
from sailplane.model.sidecar import IngressTLS, SidecarIngress
from sailplane.translate.clusters import build_inbound_cluster
from sailplane.translate.common import pack
from sailplane.translate.mtls import TLS_SOCKET
from sailplane.translate.proxy import Proxy
from sailplane.translate.tlscredentials import downstream_tls_context


def sidecar_ingress(mesh: MeshConfig, proxy: Proxy) -> tuple[SidecarIngress, ...]:
    """The sidecar proxy's Sidecar's ingress listeners; () when its services
    decide. Not for gateways (their Gateway servers decide their listeners)."""
    sidecar = mesh.sidecar_for(proxy.workload)
    return sidecar.ingress if sidecar is not None else ()


def ingress_cluster(ingress: SidecarIngress, app_address: str) -> cluster_pb2.Cluster:
    """``inbound|PORT||`` to the ingress's default endpoint: the app's own
    address on ``endpoint_port``, or a unix socket."""
    cluster = build_inbound_cluster(ingress.port, app_address, ingress.served_protocol)
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    if ingress.unix_path:
        endpoint.address.CopyFrom(
            address_pb2.Address(pipe=address_pb2.Pipe(path=ingress.unix_path))
        )
        cluster.ClearField("upstream_bind_config")  # a unix socket has no source address
    elif ingress.endpoint_port:
        endpoint.address.socket_address.port_value = ingress.endpoint_port
    return cluster


def ingress_tls_socket(tls: IngressTLS, http: bool) -> base_pb2.TransportSocket:
    """TLS terminated with certificate files; MUTUAL requires a client
    certificate signed by the given CA (Istio's BuildListenerTLSContext).
    ALPN offers h2 and http/1.1 on HTTP ports only."""
    context = downstream_tls_context(
        ServerTLS(
            tls.mode,
            server_certificate=tls.server_certificate,
            private_key=tls.private_key,
            ca_certificates=tls.ca_certificates,
        )
    )
    if not http:
        context.common_tls_context.ClearField("alpn_protocols")
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
