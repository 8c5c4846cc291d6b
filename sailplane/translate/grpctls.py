"""mTLS between proxyless gRPC clients and servers (gRFC A29; Istio's
grpcgen ``buildCommonTLSContext``).

gRPC reads no SDS and no certificate files from xDS: a TLS context names a
certificate provider instance of its bootstrap, ``default``, which `sailplane
bootstrap --grpc` writes as a ``file_watcher`` of the workload's mesh
certificate, key and root (grpcbootstrap.py). A node whose bootstrap lacks
it NACKs the context (A29), and so refuses the connections that needed it:
it fails closed.

- Server (A36 filter chain): a ``DownstreamTlsContext`` with the provider's
  identity and root, client certificates required, when the workload's
  PeerAuthentication mode on that port is STRICT. gRPC has no PERMISSIVE
  (one filter chain can only match ``raw_buffer``): PERMISSIVE and DISABLE
  serve plaintext, as Istio's grpcgen does.
- Client (CDS): a cluster to a service port that some selected workload
  serves STRICT, or whose DestinationRule says ``ISTIO_MUTUAL``, is the
  proxy's own copy of the shared one with an ``UpstreamTlsContext`` that
  checks the server's SPIFFE identities (``match_subject_alt_names``). gRPC
  ignores ``transport_socket_matches`` (Envoy's auto mTLS), and NACKs the
  SDS ``ISTIO_MUTUAL`` socket: both are replaced.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Service, ServicePort
from sailplane.translate.clusters import build_service_clusters
from sailplane.translate.common import pack
from sailplane.translate.mtls import TLS_SOCKET

# The certificate provider instance and certificate names Istio's grpcgen uses.
CERTIFICATE_PROVIDER = "default"
_IDENTITY = common_pb2.CertificateProviderPluginInstance(
    instance_name=CERTIFICATE_PROVIDER, certificate_name="default"
)
_ROOT = common_pb2.CertificateProviderPluginInstance(
    instance_name=CERTIFICATE_PROVIDER, certificate_name="ROOTCA"
)


def grpc_tls_context(server_identities: Iterable[str] = ()) -> tls_pb2.CommonTlsContext:
    """The workload's certificate and the mesh root, from the provider;
    ``server_identities``: the SPIFFE ids a client accepts (exact)."""
    validation = common_pb2.CertificateValidationContext(ca_certificate_provider_instance=_ROOT)
    validation.match_subject_alt_names.extend(
        string_pb2.StringMatcher(exact=identity) for identity in sorted(set(server_identities))
    )
    return tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=_IDENTITY,
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=validation
        ),
    )


def grpc_downstream_socket() -> base_pb2.TransportSocket:
    """A STRICT server's filter chain: mTLS, a mesh client certificate required."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=grpc_tls_context(),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def grpc_upstream_socket(server_identities: Iterable[str]) -> base_pb2.TransportSocket:
    context = tls_pb2.UpstreamTlsContext(common_tls_context=grpc_tls_context(server_identities))
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def serves_strict(mesh: MeshConfig, service: Service, port: ServicePort) -> bool:
    """Whether some workload the service selects is STRICT on that port."""
    return any(
        mesh.mtls_mode(workload, workload.endpoint().port_for(port)) == "STRICT"
        for workload in mesh.selected_workloads(service.namespace, service.selector or {})
    )


def build_grpc_mtls_clusters(mesh: MeshConfig) -> list[cluster_pb2.Cluster]:
    """Pure: the clusters a proxyless client gets in place of the shared
    ones of the same name, for the service ports it must reach over mTLS.
    The same for every proxyless client (none of its own attributes count)."""
    out: list[cluster_pb2.Cluster] = []
    for service in mesh.services:
        rule = mesh.destination_rule_for(service.hostname)
        ports = {p.number: p for p in service.ports}
        identities = [
            mesh.spiffe_id(service.namespace, e.service_account)
            for e in mesh.endpoints_of(service)
            if e.service_account
        ]
        for cluster in build_service_clusters(mesh, service):
            _, number, subset, _ = str(cluster.name).split("|")
            port = ports[int(number)]
            tls = rule.policy(port.number, subset).tls if rule is not None else None
            if tls is not None:
                # The rule decides: DISABLE stays plaintext; SIMPLE and
                # MUTUAL (certificate files, SDS) are not gRPC's to read.
                if tls.mode != "ISTIO_MUTUAL":
                    continue
            elif not serves_strict(mesh, service, port):
                continue
            own = cluster_pb2.Cluster()
            own.CopyFrom(cluster)
            del own.transport_socket_matches[:]
            own.transport_socket.CopyFrom(grpc_upstream_socket(identities))
            out.append(own)
    return sorted(out, key=lambda c: c.name)
