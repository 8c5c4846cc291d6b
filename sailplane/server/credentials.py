"""The mTLS xDS port (15012): server credentials and bootstrap credentials;
the ``credentialName`` secrets a proxy is sent.

The server presents a certificate for sailplane's own identity
(``spiffe://TD/ns/istio-system/sa/sailplane``, and the hosts it listens on
for clients that check a hostname: gRPC's) from the built-in CA and
requires a client certificate from the same CA. Which workload a client may
claim to be is checked per stream by the controller (the certificate's
SPIFFE identity must be the node's service account), so no proxy can obtain
another workload's secrets.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import grpc

from sailplane.ca import CertificateAuthority, IdentityStore, spiffe_id, write_identity
from sailplane.model.credentials import KUBERNETES_SECRET_PREFIX
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Workload
from sailplane.translate.bootstrap import BootstrapCredentials
from sailplane.translate.proxy import Proxy
from sailplane.translate.tlscredentials import credential_secrets
from sailplane.xds import CLUSTER, LISTENER, SECRET, Snapshot, TypeResources, merge_types

CONTROL_PLANE_NAMESPACE = "istio-system"
CONTROL_PLANE_ACCOUNT = "sailplane"


def control_plane_identity(trust_domain: str) -> str:
    return spiffe_id(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)


def server_hostnames(hosts: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) for sailplane's xDS certificate: the hosts
    it listens on, this machine's name for a wildcard address, and
    localhost. Envoy checks only the SPIFFE SAN; gRPC's ``tls`` xDS channel
    credentials (gRFC A65) check the server URI's host, as a web client does."""
    dns: set[str] = {"localhost"}
    ips: set[str] = {"127.0.0.1", "::1"}
    for host in hosts:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            dns.add(host)
            continue
        if address.is_unspecified:
            dns.add(socket.gethostname())
        else:
            ips.add(str(address))
    return tuple(sorted(dns)), tuple(sorted(ips))


def server_credentials(
    store: IdentityStore, trust_domain: str, hosts: Iterable[str] = ()
) -> grpc.ServerCredentials:
    """Credentials that follow certificate rotation: gRPC asks the fetcher
    on each new handshake, and we hand it a new configuration once the store
    has re-issued sailplane's certificate. ``hosts``: where it listens
    (:func:`server_hostnames`)."""
    uri = control_plane_identity(trust_domain)
    store.set_hostnames(uri, *server_hostnames(hosts))
    served = {"serial": store.get(uri).serial}

    def config() -> grpc.ServerCertificateConfiguration:
        identity = store.get(uri)
        served["serial"] = identity.serial
        return grpc.ssl_server_certificate_configuration(
            [(identity.private_key_pem, identity.cert_chain_pem)],
            root_certificates=identity.trust_bundle_pem,
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        if store.get(uri).serial == served["serial"]:
            return None  # keep the current configuration
        return config()

    return grpc.dynamic_ssl_server_credentials(config(), fetch, require_client_authentication=True)


def write_bootstrap_credentials(
    authority: CertificateAuthority,
    workload: Workload,
    directory: Path,
    ttl: timedelta = timedelta(days=365),
) -> BootstrapCredentials:
    """Mint the workload's certificate for its bootstrap (the counterpart of
    Istio's bootstrap token): key 0600, next to the bootstrap."""
    directory.mkdir(parents=True, exist_ok=True)
    identity = authority.issue_workload(workload.namespace, workload.service_account, ttl=ttl)
    stem = f"{workload.name}.{workload.namespace}"
    files = BootstrapCredentials(
        cert_chain=directory / f"{stem}.cert-chain.pem",
        private_key=directory / f"{stem}.key.pem",
        root_cert=directory / "root-cert.pem",
        server_identity=control_plane_identity(authority.trust_domain),
    )
    write_identity(identity, files.cert_chain, files.private_key, files.root_cert)
    return files


def with_credentials(
    mesh: MeshConfig,
    proxy: Proxy,
    identity_secrets: TypeResources,
    listeners: TypeResources,
    clusters: TypeResources,
) -> TypeResources:
    """The proxy's identity secrets plus the ``credentialName`` secrets its
    listeners and clusters refer to, filled from the Secrets of its own
    namespace. Only a proxy whose certificate proved its identity has
    identity secrets, and only such a proxy gets these (as Istio serves
    credentials only to the verified identity of the Secret's namespace)."""
    if not identity_secrets.chunks or not mesh.secrets:
        return identity_secrets
    wanted = {
        name
        for name in listeners.references.sds | clusters.references.sds
        if name.startswith(KUBERNETES_SECRET_PREFIX)
    }
    if not wanted:
        return identity_secrets
    found = credential_secrets(mesh, proxy.namespace, wanted)
    if not found:
        return identity_secrets
    extra = TypeResources.build(SECRET, [(s.name, s) for s in found])
    return merge_types(identity_secrets, extra)


def consistency_problems(snapshot: Snapshot) -> list[str]:
    """``snapshot.consistent()``, less the ``credentialName`` secrets that no
    Secret of the proxy's namespace fills: a configuration problem (config
    checks warn about it), not sailplane's. Istio leaves them unanswered too:
    Envoy waits for them, then fails the handshakes that need them."""
    referenced = snapshot.get(LISTENER).references.sds | snapshot.get(CLUSTER).references.sds
    unfilled = {
        (SECRET, name)
        for name in referenced - snapshot.get(SECRET).chunks.keys()
        if name.startswith(KUBERNETES_SECRET_PREFIX)
    }
    return snapshot.consistent(may_dangle=unfilled)
