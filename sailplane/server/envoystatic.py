"""A proxy's snapshot as one static Envoy bootstrap, for ``envoy --mode
validate`` (see envoycheck.py).

The conversion is minimal, so that it cannot hide a rejection: every
resource keeps every field, and only the xDS plumbing becomes static.
An EDS cluster becomes ``STATIC`` with its ClusterLoadAssignment inline
(both carry the same ``LbEndpoint``s), an HTTP connection manager's
``rds`` becomes the RouteConfiguration it names (``validate_clusters``
pinned to RDS's default, off, unless the resource sets it), an SDS
reference loses its ``sds_config`` and names a static secret (the
snapshot's own, or test material for one the snapshot withholds), and the
bootstrap is the one ``sailplane bootstrap`` writes without its
``dynamic_resources``. A certificate, key or CA *file* that is not on this
machine (it is on the proxy's) is checked as test material of its kind, and
said so. A config source left anywhere after that is a conversion failure,
reported, not guessed at.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import any_pb2, symbol_database, wrappers_pb2
from google.protobuf.message import Message

from sailplane.ca import CertificateAuthority
from sailplane.errors import SailplaneError
from sailplane.model.registry import Workload
from sailplane.translate.bootstrap import build_bootstrap
from sailplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Snapshot
from sailplane.xds.encoding import payload

# Where the bootstrap points for xDS; never dialled in validate mode.
_XDS_ADDRESS = ("127.0.0.1", 15010)


class ConversionError(SailplaneError):
    """A snapshot that cannot be made static without changing what it means."""


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """One proxy's snapshot as a static bootstrap, and what its indexes name."""

    proxy: str
    bootstrap: bootstrap_pb2.Bootstrap
    # The static_resources lists, in order: for Envoy's "Listeners[3]" messages.
    listeners: tuple[str, ...]
    clusters: tuple[str, ...]
    secrets: tuple[str, ...]
    # The configuration's content hash, the node left out (proxies that
    # differ only in who they are share one validation).
    digest: str
    notes: tuple[str, ...] = ()  # what was checked with test material, and why
    # The pieces Envoy's verdict depends on (resources and how they meet),
    # "KIND NAME CONTENT-HASH": a configuration whose every piece was part of one
    # Envoy accepted adds nothing to check (check_configs(cover=True)).
    units: frozenset[str] = frozenset()


# -- conversion --------------------------------------------------------------


def static_config(workload: Workload, snapshot: Snapshot) -> StaticConfig:
    """``snapshot`` as the static bootstrap of ``workload``'s proxy."""
    routes: Mapping[str, Message] = snapshot.get(ROUTE).messages
    secrets: dict[str, secret_pb2.Secret] = {
        name: _as(secret_pb2.Secret, m) for name, m in snapshot.get(SECRET).messages.items()
    }
    wanted: dict[str, str] = {}  # secret name -> "certificate" | "validation"
    rewrite = _Rewriter(routes, wanted)

    bootstrap = build_bootstrap(workload, _XDS_ADDRESS)
    bootstrap.ClearField("dynamic_resources")
    static = bootstrap.static_resources
    clusters = snapshot.get(CLUSTER)
    assignments = snapshot.get(ENDPOINT).chunks
    # "cluster NAME CONTENT-HASH" (see StaticConfig.units): the bootstrap's
    # own clusters here, the snapshot's as _static_cluster makes them.
    cluster_units = [
        f"cluster {c.name} {_digest(c.SerializeToString(deterministic=True))}"
        for c in static.clusters
    ]
    for name, message in clusters.messages.items():
        cluster = _as(cluster_pb2.Cluster, message)
        service = cluster.eds_cluster_config.service_name or cluster.name
        assignment = assignments.get(service) if cluster.type == cluster_pb2.Cluster.EDS else None
        # Clusters are shared by most proxies: each distinct one made static once.
        data, digest, wants, notes = _static_cluster(clusters.chunks[name], assignment)
        added = static.clusters.add()
        added.MergeFromString(data)
        cluster_units.append(f"cluster {added.name} {digest}")
        for secret, usage in wants:
            wanted.setdefault(secret, usage)
        rewrite.notes += notes
    for name, message in snapshot.get(LISTENER).messages.items():
        listener = static.listeners.add()
        listener.CopyFrom(message)
        rewrite(listener, f"listener {name!r}")
    for name in sorted(secrets.keys() | wanted.keys()):
        secret = static.secrets.add()
        if name in secrets:
            secret.CopyFrom(secrets[name])
        else:
            secret.CopyFrom(_test_secret(name, wanted[name]))
            rewrite.notes.append(
                f"secret {name!r} is not in the snapshot (withheld); checked with test material"
            )
    unnamed = bootstrap_pb2.Bootstrap()
    unnamed.CopyFrom(bootstrap)
    unnamed.ClearField("node")
    return StaticConfig(
        workload.id,
        bootstrap,
        tuple(listener.name for listener in static.listeners),
        tuple(cluster.name for cluster in static.clusters),
        tuple(secret.name for secret in static.secrets),
        _digest(unnamed.SerializeToString(deterministic=True)),
        tuple(rewrite.notes),
        _units(snapshot, unnamed, cluster_units),
    )


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _units(
    snapshot: Snapshot, unnamed: bootstrap_pb2.Bootstrap, cluster_units: Iterable[str]
) -> frozenset[str]:
    """What Envoy's verdict on a configuration depends on, in pieces (see
    :attr:`StaticConfig.units`): each listener and route table as served,
    with the names of the clusters it refers to that exist (a gRPC service
    naming a missing cluster is refused); each static cluster (endpoints
    inline) and secret; and the shape: listener names and addresses (two
    on one address clash), secret names, and the rest of the bootstrap.
    ``cluster_units``: the static clusters' units, hashed by
    :func:`_static_cluster` when it made them."""
    static = unnamed.static_resources
    clusters = [c.name.encode() for c in static.clusters]
    units = set()
    for kind, type_url in (("listener", LISTENER), ("route", ROUTE)):
        for name, chunk in snapshot.get(type_url).chunks.items():
            present = sorted(c for c in clusters if c in chunk)
            units.add(f"{kind} {name} {_digest(chunk, *present)}")
    units |= set(cluster_units)
    units |= {
        f"secret {s.name} {_digest(s.SerializeToString(deterministic=True))}"
        for s in static.secrets
    }
    rest = bootstrap_pb2.Bootstrap()
    rest.CopyFrom(unnamed)
    rest.ClearField("static_resources")
    shape = [rest.SerializeToString(deterministic=True)]
    shape += [x.name.encode() + x.address.SerializeToString() for x in static.listeners]
    shape += [x.name.encode() for x in static.secrets]
    units.add(f"shape - {_digest(*shape)}")
    return frozenset(units)


_M = TypeVar("_M", bound=Message)


def _as(kind: type[_M], message: Message) -> _M:
    assert isinstance(message, kind), (kind, type(message))
    return message


@functools.lru_cache(maxsize=8192)
def _static_cluster(
    chunk: bytes, assignment: bytes | None
) -> tuple[bytes, str, tuple[tuple[str, str], ...], tuple[str, ...]]:
    """One served cluster (and its EDS assignment) made static: its bytes,
    their digest, the secrets it wants (name, usage) and the notes."""
    cluster = cluster_pb2.Cluster()
    _unpack_into(any_pb2.Any.FromString(payload(chunk)), cluster)
    if cluster.type == cluster_pb2.Cluster.EDS:
        service = cluster.eds_cluster_config.service_name or cluster.name
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.ClearField("eds_cluster_config")
        if assignment is None:  # dangling (the consistency check reports it): no endpoints
            cluster.load_assignment.cluster_name = service
        else:
            _unpack_into(any_pb2.Any.FromString(payload(assignment)), cluster.load_assignment)
    wanted: dict[str, str] = {}
    rewrite = _Rewriter({}, wanted)
    rewrite(cluster, f"cluster {cluster.name!r}")
    data: bytes = cluster.SerializeToString(deterministic=True)
    return data, _digest(data), tuple(wanted.items()), tuple(rewrite.notes)


class _Rewriter:
    """Makes one resource static in place: RDS inlined, SDS pointed at static
    secrets; every other field as it was. Any config source left over is a
    :class:`ConversionError` (a static bootstrap cannot honour it)."""

    def __init__(self, routes: Mapping[str, Message], wanted: dict[str, str]) -> None:
        self.routes = routes
        self.wanted = wanted
        self.notes: list[str] = []
        self.resource = ""

    def __call__(self, message: Message, resource: str) -> None:
        self.resource = resource
        self._visit(message, "")

    def _visit(self, message: Message, field_name: str) -> bool:
        """Rewrite ``message`` and what it holds; True if anything changed."""
        changed = False
        if isinstance(message, hcm_pb2.HttpConnectionManager) and message.HasField("rds"):
            self._inline_routes(message)
            changed = True
        elif isinstance(message, secret_pb2.SdsSecretConfig) and message.HasField("sds_config"):
            message.ClearField("sds_config")
            validation = "validation" in field_name
            self.wanted.setdefault(message.name, "validation" if validation else "certificate")
            changed = True
        elif isinstance(message, base_pb2.DataSource) and message.filename:
            changed = self._absent_file(message, field_name)
        elif isinstance(message, config_source_pb2.ConfigSource):
            raise ConversionError(
                f"{self.resource}: field {field_name} is a config source sailplane "
                "cannot make static; it is not checked"
            )
        for field, value in message.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            if field.message_type.GetOptions().map_entry:
                for key in list(value):
                    item = value[key]
                    if isinstance(item, Message):
                        changed |= self._visit_item(item, field.name)
            elif field.is_repeated:
                for item in value:
                    changed |= self._visit_item(item, field.name)
            else:
                changed |= self._visit_item(value, field.name)
        return changed

    def _visit_item(self, item: Message, field_name: str) -> bool:
        if not isinstance(item, any_pb2.Any):
            return self._visit(item, field_name)
        inner = _unpack(item)
        if inner is None or not self._visit(inner, field_name):
            return False
        # The type URL as it was; only the bytes change.
        item.value = inner.SerializeToString(deterministic=True)
        return True

    def _absent_file(self, source: base_pb2.DataSource, field_name: str) -> bool:
        """A certificate, key or CA file that is not on this machine (it is
        on the proxy's) is checked as test material of its kind."""
        material = _FILE_MATERIAL.get(field_name)
        if material is None or os.path.exists(source.filename):
            return False
        self.notes.append(
            f"{self.resource}: {field_name} file {source.filename} is not on this machine; "
            "checked with test material"
        )
        source.inline_bytes = _test_material()[material]  # replaces filename (one oneof)
        return True

    def _inline_routes(self, manager: hcm_pb2.HttpConnectionManager) -> None:
        name = manager.rds.route_config_name
        found = self.routes.get(name)
        table = route_pb2.RouteConfiguration(name=name)
        if found is not None:  # dangling otherwise (the consistency check reports it)
            table.CopyFrom(found)
        if not table.HasField("validate_clusters"):
            # RDS's default; inline route tables would otherwise check clusters.
            table.validate_clusters.CopyFrom(wrappers_pb2.BoolValue(value=False))
        self._visit(table, "route_config")
        manager.route_config.CopyFrom(table)  # replaces rds (one oneof)


def _unpack_into(packed: any_pb2.Any, into: Message) -> None:
    if not packed.Unpack(into):
        raise ConversionError(f"{packed.type_url} is not a {into.DESCRIPTOR.full_name}")


def _unpack(packed: any_pb2.Any) -> Message | None:
    try:
        cls = symbol_database.Default().GetSymbol(packed.TypeName())
    except KeyError:
        return None
    inner: Message = cls()
    packed.Unpack(inner)
    return inner


def _test_secret(name: str, usage: str) -> secret_pb2.Secret:
    """Test material for a secret the snapshot withholds: a certificate and
    key, or a trust bundle, made once per process."""
    cert, key, ca = _test_material()
    secret = secret_pb2.Secret(name=name)
    if usage == "validation":
        secret.validation_context.trusted_ca.inline_bytes = ca
    else:
        secret.tls_certificate.CopyFrom(
            common_pb2.TlsCertificate(
                certificate_chain={"inline_bytes": cert}, private_key={"inline_bytes": key}
            )
        )
    return secret


_FILE_MATERIAL = {"certificate_chain": 0, "private_key": 1, "trusted_ca": 2}


@functools.cache
def _test_material() -> tuple[bytes, bytes, bytes]:
    """A certificate chain, its key and its CA, made once per process."""
    issued = CertificateAuthority.create_self_signed().issue_workload("default", "test")
    return issued.cert_chain_pem, issued.private_key_pem, issued.trust_bundle_pem
