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
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.sidecar import IngressTLS, SidecarIngress
from sailplane.translate.clusters import build_inbound_cluster
from sailplane.translate.common import pack
from sailplane.translate.proxy import Proxy, Role

TLS_SOCKET = "envoy.transport_sockets.tls"


def sidecar_ingress(mesh: MeshConfig, proxy: Proxy) -> tuple[SidecarIngress, ...]:
    """The proxy's Sidecar's ingress listeners; () when its services decide."""
    if proxy.role is not Role.SIDECAR:
        return ()
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
    elif ingress.endpoint_port:
        endpoint.address.socket_address.port_value = ingress.endpoint_port
    return cluster


def ingress_tls_socket(tls: IngressTLS, http: bool) -> base_pb2.TransportSocket:
    """TLS terminated with certificate files; MUTUAL requires a client
    certificate signed by the given CA (Istio's BuildListenerTLSContext)."""
    common = tls_pb2.CommonTlsContext(
        tls_certificates=[
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=tls.server_certificate),
                private_key=base_pb2.DataSource(filename=tls.private_key),
            )
        ]
    )
    if http:
        common.alpn_protocols.extend(["h2", "http/1.1"])
    if tls.mode == "MUTUAL":
        common.validation_context.trusted_ca.filename = tls.ca_certificates
    # The constructor copies ``common``: it is complete by now.
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if tls.mode == "MUTUAL":
        context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
