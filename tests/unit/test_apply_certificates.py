"""Certificates during an apply (server/controller.py): the CA is asked once
per identity, and every proxy still gets its own identity's, never that of
another proxy served in the same apply. (A proved identity that is not the
workload's service account gets none: that check comes first, per proxy;
tests/e2e/test_trust_boundary.py.)"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from benchmarks.fanout import changed_spec
from benchmarks.meshgen import MeshSpec, generate_texts, proxy_ids
from sailplane.ca import IssuedIdentity
from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig
from sailplane.server.controller import Controller
from sailplane.translate.proxy import proxy_from_node
from sailplane.xds import SECRET, SnapshotCache


def _mesh(spec: MeshSpec) -> MeshConfig:
    result = load_texts(generate_texts(spec))
    assert result.mesh is not None, result.errors
    return result.mesh


def _identity_served(cache: SnapshotCache, node_id: str) -> list[str]:
    snapshot = cache.get(node_id)
    assert snapshot is not None
    secret = snapshot.get(SECRET).messages.get("default")
    if secret is None:
        return []
    assert isinstance(secret, secret_pb2.Secret)
    chain = secret.tls_certificate.certificate_chain.inline_bytes
    leaf = x509.load_pem_x509_certificate(chain)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(uri) for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]


def test_the_ca_is_asked_once_per_identity_and_each_proxy_gets_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = MeshSpec(services=3, ports=1, workloads_per_service=2, subsets=2)
    mesh = _mesh(spec)
    cache = SnapshotCache()
    controller = Controller(cache)
    controller.apply(mesh)
    nodes = proxy_ids(spec, 6)  # two proxies for each of three service accounts
    own: dict[str, str] = {}
    for node_id in nodes:
        proxy = proxy_from_node(node_id, {}, mesh)
        own[node_id] = mesh.spiffe_id(proxy.namespace, proxy.workload.service_account)
        controller.admit(dataclasses.replace(proxy, proven_identity=own[node_id]))
    assert len(set(own.values())) == 3
    asked: list[str] = []
    get = controller.identities.get

    def counted(spiffe_id: str) -> IssuedIdentity:
        asked.append(spiffe_id)
        return get(spiffe_id)

    monkeypatch.setattr(controller.identities, "get", counted)
    controller.apply(_mesh(changed_spec(spec, "endpoint")))
    assert sorted(asked) == sorted(set(own.values()))  # once per identity
    for node_id in nodes:
        assert _identity_served(cache, node_id) == [own[node_id]], node_id
