"""Which proxy a new xDS stream is, and which snapshot it shares.

A stream names a node (its id and metadata) and, on the mTLS port, proves an
identity with its client certificate. ``admitted_proxy`` turns that into a
:class:`~sailplane.translate.Proxy` or refuses it (``UnknownProxy`` for a
node no WorkloadEntry names, ``IdentityMismatch`` for a certificate of
another service account); ``StreamKeys`` decides which cache key the stream
reads, so that a stream claiming something else than the others of its node
can never change what they receive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from sailplane.ca import identity_of_certificate
from sailplane.errors import IdentityMismatch
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Locality
from sailplane.translate import Proxy, proxy_from_node


def admitted_proxy(node: base_pb2.Node, certificate_pem: bytes | None, mesh: MeshConfig) -> Proxy:
    """The proxy a stream is, with the identity its certificate proved (None
    on the plaintext port). Raises ``ProxyRefused``."""
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    where = node.locality
    proxy = proxy_from_node(
        node.id, metadata, mesh, Locality(where.region, where.zone, where.sub_zone)
    )
    proven = None
    if certificate_pem is not None:
        # The mTLS xDS port: the certificate must be this workload's own
        # identity, or one proxy could fetch another's secrets.
        try:
            claimed = identity_of_certificate(certificate_pem)
        except ValueError as exc:
            raise IdentityMismatch(
                f"node {proxy.id!r}: unusable client certificate: {exc}"
            ) from exc
        expected = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
        if claimed != expected:
            raise IdentityMismatch(
                f"node {proxy.id!r} belongs to {expected}, but the client certificate is {claimed}"
            )
        proven = claimed
    return dataclasses.replace(proxy, proven_identity=proven)


class StreamKeys:
    """The cache key of each stream: streams of one node id share a snapshot
    only if they claim the same metadata and proved the same identity (a
    reconnect); a stream that claims something else gets ``NODE~DIGEST``."""

    def __init__(self) -> None:
        self._claims: dict[str, str] = {}  # stream key -> digest of its claims

    def key_for(self, proxy: Proxy) -> str:
        claims = claims_digest(proxy)
        node_id = proxy.id
        key = node_id if self._claims.get(node_id, claims) == claims else f"{node_id}~{claims}"
        self._claims[key] = claims
        return key

    def forget(self, key: str) -> None:
        """The last stream of ``key`` ended."""
        self._claims.pop(key, None)


def claims_digest(proxy: Proxy) -> str:
    """What a stream claimed (node metadata) and proved (its certificate)."""
    where = proxy.node_locality
    claimed = [proxy.metadata, proxy.proven_identity, [where.region, where.zone, where.subzone]]
    claims = json.dumps(claimed, sort_keys=True, default=str)
    return hashlib.sha256(claims.encode()).hexdigest()[:12]
