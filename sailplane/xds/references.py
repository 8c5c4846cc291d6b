"""What Envoy resources refer to: EDS names, RDS names, SDS secret names.

Used by :meth:`Snapshot.consistent`; walks messages generically so new
filters and transport sockets are covered without changes here. Found once
per shared :class:`~sailplane.xds.resources.TypeResources` (see its
``references``), so checking 2,000 proxies' snapshots walks the mesh's
clusters once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2  # noqa: F401
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message


@dataclass(frozen=True, slots=True)
class References:
    """Names some resources refer to, by the type that must hold them."""

    eds: frozenset[str] = frozenset()  # ClusterLoadAssignments (from clusters)
    rds: frozenset[str] = frozenset()  # RouteConfigurations (from listeners)
    sds: frozenset[str] = frozenset()  # Secrets (from anything)

    def __or__(self, other: References) -> References:
        return References(self.eds | other.eds, self.rds | other.rds, self.sds | other.sds)

    @classmethod
    def of(cls, messages: Iterable[Message]) -> References:
        """What ``messages`` refer to, each walked once."""
        eds: set[str] = set()
        rds: set[str] = set()
        sds: set[str] = set()
        for message in messages:
            if isinstance(message, cluster_pb2.Cluster) and message.type == cluster_pb2.Cluster.EDS:
                eds.add(message.eds_cluster_config.service_name or message.name)
            for m in _walk(message):
                if isinstance(m, hcm_pb2.HttpConnectionManager) and m.HasField("rds"):
                    rds.add(m.rds.route_config_name)
                elif isinstance(m, secret_pb2.SdsSecretConfig) and m.HasField("sds_config"):
                    sds.add(m.name)
        return cls(frozenset(eds), frozenset(rds), frozenset(sds))


def _walk(message: Message) -> Iterable[Message]:
    """Every message inside ``message``, unpacking ``Any`` fields."""
    yield message
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        items = value if field.is_repeated else [value]
        if field.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        for item in items:
            if isinstance(item, any_pb2.Any):
                inner = _unpack(item)
                if inner is not None:
                    yield from _walk(inner)
            else:
                yield from _walk(item)


def _unpack(packed: any_pb2.Any) -> Message | None:
    try:
        cls = symbol_database.Default().GetSymbol(packed.TypeName())
    except KeyError:
        return None
    inner: Message = cls()
    packed.Unpack(inner)
    return inner


__all__ = ["References"]
