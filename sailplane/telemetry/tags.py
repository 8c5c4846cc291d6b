"""Telemetry tag overrides applied to one entry's labels, as Istio's stats
filter applies them (istio/proxy ``istio_stats``): REMOVE drops a tag; UPSERT
replaces a standard tag's value in place or adds a new tag after the
standard ones (in tag-name order, as pilot sorts them); a value that cannot
be found (a header the request did not carry, a peer sailplane could not
name) is ``unknown``, as the stats filter's failed evaluations are.

Peers, as in Istio: on the client side (outbound, reporter=source) the
``upstream_peer`` is the destination and there is no ``downstream_peer``; on
the server side it is the other way round. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from sailplane.model.telemetry import MetricShape, TagPlan, TagValue
from sailplane.telemetry.attributes import (
    PROTOCOLS,
    UNKNOWN,
    Attributes,
    Peer,
    address_ip,
    address_port,
    grpc_status,
    peer_certificate_uri,
)

LabelPairs = tuple[tuple[str, str], ...]


class Entry:
    """What tag values may read from one access log entry (HTTP or TCP)."""

    def __init__(
        self,
        attributes: Attributes,
        common: accesslog_pb2.AccessLogCommon,
        http: accesslog_pb2.HTTPAccessLogEntry | None = None,
    ) -> None:
        self.attributes = attributes
        self.common = common
        self.http = http

    def peer(self, which: str) -> Peer | None:
        outbound = self.attributes.reporter == "source"
        if which == "upstream_peer":
            return self.attributes.destination if outbound else None
        return None if outbound else self.attributes.source

    def value(self, tag: TagValue) -> str:
        if not tag.attribute:
            return tag.key
        found = self._lookup(tag)
        return UNKNOWN if found is None else found

    def _lookup(self, tag: TagValue) -> str | None:
        root, _, name = tag.attribute.partition(".")
        if root.endswith("_peer"):
            peer = self.peer(root)
            if peer is None:
                return None
            if name == "labels":
                return peer.labels.get(tag.key)
            return _PEER_FIELDS[name](peer)
        if root in ("request", "response"):
            if self.http is None:
                return None
            if name == "headers":
                headers = (
                    self.http.request.request_headers
                    if root == "request"
                    else self.http.response.response_headers
                )
                found = headers.get(tag.key.lower())
                return None if found is None else str(found)
            return _HTTP_FIELDS[tag.attribute](self.http)
        return _COMMON_FIELDS[tag.attribute](self.common)


def _text(value: str) -> str | None:
    return value or None


def _ip(address: address_pb2.Address) -> str | None:
    return address_ip(address) or None


def _port(address: address_pb2.Address) -> str | None:
    port = address_port(address)
    return str(port) if port else None


def _method(entry: accesslog_pb2.HTTPAccessLogEntry) -> str | None:
    method = entry.request.request_method
    return base_pb2.RequestMethod.Name(method) if method else None


_PEER_FIELDS: dict[str, Callable[[Peer], str]] = {
    "name": lambda p: p.workload,
    "workload": lambda p: p.workload,
    "namespace": lambda p: p.namespace,
    "app": lambda p: p.app,
    "version": lambda p: p.version,
    "service": lambda p: p.canonical_service,
    "revision": lambda p: p.canonical_revision,
}
_HTTP_FIELDS: dict[str, Callable[[accesslog_pb2.HTTPAccessLogEntry], str | None]] = {
    "request.path": lambda e: _text(e.request.original_path or e.request.path),
    "request.url_path": lambda e: _text((e.request.original_path or e.request.path).split("?")[0]),
    "request.query": lambda e: (e.request.original_path or e.request.path).partition("?")[2],
    "request.host": lambda e: _text(e.request.authority),
    "request.scheme": lambda e: _text(e.request.scheme),
    "request.method": _method,
    "request.referer": lambda e: _text(e.request.referer),
    "request.useragent": lambda e: _text(e.request.user_agent),
    "request.id": lambda e: _text(e.request.request_id),
    "request.protocol": lambda e: PROTOCOLS.get(e.protocol_version),
    "response.code": lambda e: str(e.response.response_code.value),
    "response.code_details": lambda e: _text(e.response.response_code_details),
    "response.grpc_status": lambda e: _text(grpc_status(e.response)),
}
_COMMON_FIELDS: dict[str, Callable[[accesslog_pb2.AccessLogCommon], str | None]] = {
    "source.address": lambda c: _ip(c.downstream_remote_address),
    "source.port": lambda c: _port(c.downstream_remote_address),
    "destination.address": lambda c: _ip(c.downstream_local_address),
    "destination.port": lambda c: _port(c.downstream_local_address),
    "upstream.address": lambda c: _ip(c.upstream_remote_address),
    "upstream.port": lambda c: _port(c.upstream_remote_address),
    "connection.mtls": lambda c: "true" if peer_certificate_uri(c) else "false",
    "connection.requested_server_name": lambda c: _text(c.tls_properties.tls_sni_hostname),
    "xds.cluster_name": lambda c: _text(c.upstream_cluster),
    "xds.route_name": lambda c: _text(c.route_name),
}


def apply_tags(base: LabelPairs, plan: TagPlan | None, entry: Entry) -> LabelPairs:
    """``base`` with the overrides of ``plan`` applied (see the module docstring)."""
    if plan is None:
        return base
    by_name = plan.by_name
    out = []
    standard: set[str] = set()
    for name, value in base:
        tag = by_name.get(name)
        if tag is None:
            out.append((name, value))
            continue
        standard.add(name)
        if not tag.remove and tag.value is not None:
            out.append((name, entry.value(tag.value)))
    out.extend(
        (t.name, entry.value(t.value))
        for t in plan.upserts
        if t.value is not None and t.name not in standard
    )
    return tuple(out)


def shaped(
    shape: MetricShape, base: LabelPairs, entry: Entry, values: Iterable[tuple[str, float]]
) -> list[tuple[str, LabelPairs, float]]:
    """One entry's (metric, labels, value) points: dropped metrics left out,
    each metric's tag overrides applied."""
    return [
        (metric, apply_tags(base, shape.plan_of(metric), entry), value)
        for metric, value in values
        if metric not in shape.dropped
    ]
