"""Gateway TLS termination and ``credentialName`` secrets.

A server's certificate comes from files (``serverCertificate``), from a
Secret (``credentialName``: SDS ``kubernetes://NAME``, and for MUTUAL the CA
``kubernetes://NAME-cacert``, as Istio's ApplyCredentialSDSToServerCommonTLSContext)
or, for ISTIO_MUTUAL, from the gateway's own mesh identity. The secrets
themselves are built per proxy from the Secrets of its namespace (Istio's
SecretGen: a proxy reads Secrets of its own namespace only).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from sailplane.model.credentials import (
    CA_SUFFIX,
    KUBERNETES_SECRET_PREFIX,
    find_ca,
    find_secret,
    sds_name,
    secret_reference,
)
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import ServerTLS
from sailplane.translate.mtls import ROOT_SECRET, WORKLOAD_SECRET, sds

_VERIFYING = ("MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")


def downstream_tls_context(tls: ServerTLS) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    if tls.mode == "ISTIO_MUTUAL":
        common.tls_certificate_sds_secret_configs.append(sds(WORKLOAD_SECRET))
        common.validation_context_sds_secret_config.CopyFrom(sds(ROOT_SECRET))
    elif tls.credential_name:
        common.tls_certificate_sds_secret_configs.append(sds(sds_name(tls.credential_name)))
        if tls.mode in _VERIFYING:
            common.combined_validation_context.default_validation_context.SetInParent()
            common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(
                sds(sds_name(tls.credential_name) + CA_SUFFIX)
            )
    else:
        common.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=tls.server_certificate),
                private_key=base_pb2.DataSource(filename=tls.private_key),
            )
        )
        if tls.mode in _VERIFYING and tls.ca_certificates:
            common.validation_context.trusted_ca.filename = tls.ca_certificates
    common.alpn_protocols.extend(["h2", "http/1.1"])
    if tls.mode in ("MUTUAL", "ISTIO_MUTUAL"):
        context.require_client_certificate.value = True
    return context


def credential_secrets(
    mesh: MeshConfig, namespace: str, wanted: Iterable[str]
) -> list[secret_pb2.Secret]:
    """The ``kubernetes://`` SDS secrets among ``wanted`` that the Secrets of
    ``namespace`` can fill; others are left out (Istio answers nothing for
    them; Envoy keeps waiting). A name that gives another namespace is never
    filled: as Istio's filterAuthorizedResources, a proxy reads only its own
    namespace's Secrets."""
    out = []
    for resource in sorted(set(wanted)):
        if not resource.startswith(KUBERNETES_SECRET_PREFIX):
            continue
        if resource.endswith(CA_SUFFIX):
            ns, name = secret_reference(resource.removesuffix(CA_SUFFIX), namespace)
            ca = find_ca(mesh.secrets, ns, name) if ns == namespace else None
            if ca is not None:
                out.append(
                    secret_pb2.Secret(
                        name=resource,
                        validation_context=common_pb2.CertificateValidationContext(
                            trusted_ca=base_pb2.DataSource(inline_bytes=ca.ca_certificates)
                        ),
                    )
                )
            continue
        ns, name = secret_reference(resource, namespace)
        found = find_secret(mesh.secrets, ns, name) if ns == namespace else None
        if found is not None and found.has_certificate:
            out.append(
                secret_pb2.Secret(
                    name=resource,
                    tls_certificate=common_pb2.TlsCertificate(
                        certificate_chain=base_pb2.DataSource(inline_bytes=found.cert_chain),
                        private_key=base_pb2.DataSource(inline_bytes=found.private_key),
                    ),
                )
            )
    return out
