"""Mutual TLS: SDS secrets, inbound TLS termination, outbound TLS origination.

Istio's scheme (istio.io/latest/docs/concepts/security): every sidecar holds
its workload certificate (SDS secret ``default``) and the mesh trust bundle
(``ROOTCA``), both over the ADS stream (``sds_config: {ads: {}}``).

* Inbound, by PeerAuthentication mode: STRICT terminates mTLS only; DISABLE
  is plaintext only; PERMISSIVE accepts both on one port (a TLS inspector
  picks the filter chain by transport protocol). Callers' identities reach
  the app in ``x-forwarded-client-cert`` (``URI=spiffe://...``), and a
  header forged by a plaintext caller is dropped (SANITIZE_SET). A new
  filter chain reaches new connections only, so STRICT is also a rule in
  the port's route configuration (an RBAC DENY of any peer without a
  certificate, see authz.http_rbac_per_route): over RDS it refuses the next
  request of a plaintext connection accepted while the port was PERMISSIVE.
* Outbound, by DestinationRule ``tls.mode``: ISTIO_MUTUAL presents
  ``default`` and verifies the server's SPIFFE identity (the service
  accounts of the destination's instances); SIMPLE / MUTUAL use files;
  DISABLE is plaintext. Without a DestinationRule TLS setting, auto mTLS:
  endpoints labelled ``security.istio.io/tlsMode: istio`` (workloads with a
  sidecar) get mTLS through transport socket matching, others plaintext.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from sailplane.model.credentials import CA_SUFFIX
from sailplane.model.credentials import sds_name as credential_sds_name
from sailplane.model.networking import ClientTLS
from sailplane.translate.common import ads_config_source, pack

WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_MATCH_KEY = "envoy.transport_socket_match"
# Istio's allIstioMtlsALPNs (pilot/pkg/networking/core/listener.go): what a
# mesh client offers in its ClientHello; a PERMISSIVE port tells its mTLS
# from a plain TLS client's by them.
ISTIO_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
# Istio's ALPNInMeshWithMxc / ALPNInMeshH2WithMxc (cluster_tls.go): what
# our own mTLS clusters offer (Istio's mtlsTCPWithMxcALPNs: not known HTTP).
UPSTREAM_MTLS_ALPNS = ("istio-peer-exchange", "istio")
# Istio's mtlsHTTPALPNs: what a client sidecar offers instead when it has
# taken a sniffed port's connection for HTTP (transparent_outbound.py).
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
# Istio's plaintextHTTPALPNs: what http_inspector reports for HTTP.
PLAINTEXT_HTTP_ALPNS = ("http/1.0", "http/1.1", "h2c")


def sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def build_secrets(
    cert_chain_pem: bytes, private_key_pem: bytes, trust_bundle_pem: bytes
) -> list[secret_pb2.Secret]:
    """The proxy's own identity and the trust bundle, inline (they travel over
    the proxy's own, authenticated, ADS stream and nowhere else)."""
    return [
        secret_pb2.Secret(
            name=ROOT_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=trust_bundle_pem)
            ),
        ),
        secret_pb2.Secret(
            name=WORKLOAD_SECRET,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=cert_chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=private_key_pem),
            ),
        ),
    ]


def _validation(
    sans: Iterable[str], prefix: str = ""
) -> tls_pb2.CommonTlsContext.CombinedCertificateValidationContext:
    default = common_pb2.CertificateValidationContext()
    for san in sorted(set(sans)):
        default.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=san),
            )
        )
    if prefix:
        default.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(prefix=prefix),
            )
        )
    return tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
        default_validation_context=default,
        validation_context_sds_secret_config=sds(ROOT_SECRET),
    )


def _mesh_tls_context(sans: Iterable[str] = (), prefix: str = "") -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds(WORKLOAD_SECRET)],
        combined_validation_context=_validation(sans, prefix),
    )


def downstream_mtls_socket(trust_domain: str) -> base_pb2.TransportSocket:
    """Inbound mTLS: a client certificate from the mesh CA is required."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_mesh_tls_context(prefix=f"spiffe://{trust_domain}/"),
        require_client_certificate={"value": True},
    )
    context.common_tls_context.alpn_protocols.extend(["h2", "http/1.1"])
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def istio_mutual_socket(
    sni: str, server_identities: Iterable[str], h2: bool = False
) -> base_pb2.TransportSocket:
    """ISTIO_MUTUAL origination, offering Istio's in-mesh ALPNs (and h2 for
    an HTTP/2 cluster) so a PERMISSIVE server takes it for mTLS."""
    context = tls_pb2.UpstreamTlsContext(
        sni=sni, common_tls_context=_mesh_tls_context(server_identities)
    )
    alpns = context.common_tls_context.alpn_protocols
    alpns.extend(UPSTREAM_MTLS_ALPNS)
    if h2:
        alpns.append("h2")
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def file_tls_socket(tls: ClientTLS, default_sni: str) -> base_pb2.TransportSocket:
    """SIMPLE / MUTUAL origination with certificates mounted as files, or from
    a Secret of the proxy's namespace (``credentialName``, over SDS as Istio's
    ApplyCustomSDSToClientCommonTLSContext: ``kubernetes://NAME`` presented
    for MUTUAL, ``kubernetes://NAME-cacert`` verifying the server)."""
    common = tls_pb2.CommonTlsContext()
    if tls.credential_name:
        resource = credential_sds_name(tls.credential_name)
        if tls.mode == "MUTUAL":
            common.tls_certificate_sds_secret_configs.append(sds(resource))
        combined = common.combined_validation_context
        combined.default_validation_context.SetInParent()
        for san in tls.subject_alt_names:
            combined.default_validation_context.match_typed_subject_alt_names.append(
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.DNS,
                    matcher=string_pb2.StringMatcher(exact=san),
                )
            )
        combined.validation_context_sds_secret_config.CopyFrom(sds(resource + CA_SUFFIX))
    elif tls.mode == "MUTUAL":
        common.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=tls.client_certificate),
                private_key=base_pb2.DataSource(filename=tls.private_key),
            )
        )
    if tls.ca_certificates and not tls.credential_name:
        common.validation_context.trusted_ca.filename = tls.ca_certificates
        for san in tls.subject_alt_names:
            common.validation_context.match_typed_subject_alt_names.append(
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.DNS,
                    matcher=string_pb2.StringMatcher(exact=san),
                )
            )
    context = tls_pb2.UpstreamTlsContext(sni=tls.sni or default_sni, common_tls_context=common)
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def istio_sni(port: int, subset: str, hostname: str) -> str:
    """Istio's SNI for mesh traffic: ``outbound_.PORT_.SUBSET_.HOST``."""
    return f"outbound_.{port}_.{subset}_.{hostname}"


def apply_client_tls(
    cluster: cluster_pb2.Cluster,
    tls: ClientTLS | None,
    sni: str,
    external_sni: str,
    server_identities: Iterable[str],
    h2: bool = False,
) -> None:
    """Set the cluster's upstream transport: explicit DestinationRule TLS,
    or auto mTLS by endpoint metadata when the rule says nothing (``h2``:
    the cluster speaks HTTP/2, offered in ALPN as Istio does).

    Auto mTLS has one match, where Istio writes two: an endpoint without the
    ``tlsMode: istio`` metadata matches nothing and gets the cluster's own
    transport socket, plaintext, which is exactly what Istio's second,
    catch-all ``tlsMode-disabled`` match to raw_buffer says. Leaving it out
    saves ~110 bytes per cluster, for every proxy."""
    if tls is None:
        cluster.transport_socket_matches.append(
            cluster_pb2.Cluster.TransportSocketMatch(
                name="tlsMode-istio",
                match=struct_pb2.Struct(fields={"tlsMode": struct_pb2.Value(string_value="istio")}),
                transport_socket=istio_mutual_socket(sni, server_identities, h2),
            )
        )
    elif tls.mode == "ISTIO_MUTUAL":
        cluster.transport_socket.CopyFrom(istio_mutual_socket(sni, server_identities, h2))
    elif tls.mode in ("SIMPLE", "MUTUAL"):
        cluster.transport_socket.CopyFrom(file_tls_socket(tls, external_sni))


def tls_match_metadata() -> base_pb2.Metadata:
    """Endpoint metadata that selects the ``tlsMode-istio`` transport socket."""
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[TLS_MATCH_KEY].update({"tlsMode": "istio"})
    return metadata


def inbound_filter_chains(
    mode: str,
    trust_domain: str,
    build_filters: Callable[[bool], list[listener_components_pb2.Filter]],
    plain_tls: bool = False,
) -> tuple[list[listener_components_pb2.FilterChain], bool]:
    """Filter chains for one inbound port, and whether a TLS inspector is needed.
    ``build_filters(tls)`` returns the network filters of a chain.

    ``plain_tls`` (TCP and passthrough ports, as Istio's
    inboundPermissiveTCPFilterChainMatchWithMxcOptions): under PERMISSIVE
    the mTLS chain takes only a ClientHello offering an Istio ALPN, and
    another TLS client (one-way TLS to the app's own TLS server, from
    outside the mesh) is passed to the app untouched."""
    if mode == "DISABLE":
        plain = listener_components_pb2.FilterChain(name="plaintext", filters=build_filters(False))
        return [plain], False
    tls_chain = listener_components_pb2.FilterChain(
        name="mtls",
        filters=build_filters(True),
        transport_socket=downstream_mtls_socket(trust_domain),
    )
    if mode == "STRICT":
        return [tls_chain], False
    tls_chain.filter_chain_match.transport_protocol = "tls"
    chains = [tls_chain]
    if plain_tls:
        tls_chain.filter_chain_match.application_protocols.extend(ISTIO_MTLS_ALPNS)
        chains.append(
            listener_components_pb2.FilterChain(
                name="tls",
                filter_chain_match=listener_components_pb2.FilterChainMatch(
                    transport_protocol="tls"
                ),
                filters=build_filters(False),
            )
        )
    chains.append(
        listener_components_pb2.FilterChain(
            name="plaintext",
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                transport_protocol="raw_buffer"
            ),
            filters=build_filters(False),
        )
    )
    return chains, True


def sniffed_filter_chains(
    mode: str,
    trust_domain: str,
    build_filters: Callable[[bool, bool], list[listener_components_pb2.Filter]],
) -> list[listener_components_pb2.FilterChain]:
    """The chains of an inbound port whose protocol is sniffed (Istio's
    ListenerProtocolAuto options in filterchain_options.go):
    ``build_filters(http, tls)``. Plaintext is told apart by http_inspector
    (PLAINTEXT_HTTP_ALPNS), mTLS by the client sidecar's ALPN
    (MTLS_HTTP_ALPNS for HTTP, Istio's others for TCP); under PERMISSIVE
    an outside client's own TLS passes to the app. Needs the TLS inspector
    (but under DISABLE) and then http_inspector (but under STRICT)."""

    def chain(
        name: str, http: bool, transport: str, alpns: Sequence[str], mtls: bool
    ) -> listener_components_pb2.FilterChain:
        out = listener_components_pb2.FilterChain(
            name=name,
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                transport_protocol=transport, application_protocols=alpns
            ),
            filters=build_filters(http, mtls),
        )
        if mtls:
            out.transport_socket.CopyFrom(downstream_mtls_socket(trust_domain))
        return out

    plaintext = [
        chain("plaintext-http", True, "raw_buffer", PLAINTEXT_HTTP_ALPNS, False),
        chain("plaintext", False, "raw_buffer", (), False),
    ]
    if mode == "DISABLE":
        return plaintext
    mtls = [
        chain("mtls-http", True, "tls", MTLS_HTTP_ALPNS, True),
        # STRICT: any other TLS is mTLS for TCP (Istio's inboundStrictFilterChainMatchOptions).
        chain("mtls", False, "tls", () if mode == "STRICT" else UPSTREAM_MTLS_ALPNS, True),
    ]
    if mode == "STRICT":
        return mtls
    return [*mtls, chain("tls", False, "tls", (), False), *plaintext]
