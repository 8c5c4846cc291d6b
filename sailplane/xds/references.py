"""What Envoy resources refer to: EDS names, RDS names, SDS secret names.

Used by :meth:`Snapshot.consistent`; walks messages generically so new
filters and transport sockets are covered without changes here.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2  # noqa: F401
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message


def eds_names(clusters: Iterable[Message]) -> set[str]:
    out = set()
    for cluster in clusters:
        assert isinstance(cluster, cluster_pb2.Cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            out.add(cluster.eds_cluster_config.service_name or cluster.name)
    return out


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


def rds_names(listeners: Iterable[Message]) -> set[str]:
    return {
        m.rds.route_config_name
        for listener in listeners
        for m in _walk(listener)
        if isinstance(m, hcm_pb2.HttpConnectionManager) and m.HasField("rds")
    }


def sds_names(resources: Iterable[Message]) -> set[str]:
    return {
        m.name
        for resource in resources
        for m in _walk(resource)
        if isinstance(m, secret_pb2.SdsSecretConfig) and m.HasField("sds_config")
    }
