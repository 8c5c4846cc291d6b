"""Access logs written by sailplane: one JSON object per line, per request
(per connection, for TCP), from the proxies' access log stream.

Enabled per workload and side by the ``sailplane`` provider (Telemetry
``accessLogging`` or the mesh's ``defaultProviders.accessLogging``); written
where ``sailplane serve --access-log-file`` says (``-``: standard output).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO, Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from sailplane.telemetry.attributes import PROTOCOLS, Attributes


def _address(address: address_pb2.Address) -> str:
    if not address.HasField("socket_address"):
        return ""
    socket = address.socket_address
    return f"{socket.address}:{socket.port_value}"


def _peer_principal(attributes: Attributes) -> str:
    """The other side's identity: observed (the client certificate) on the
    inbound side, pinned by configuration on the outbound side."""
    if attributes.reporter == "destination":
        return attributes.source.principal
    return attributes.destination.principal


def _common_record(
    proxy: str, attributes: Attributes, common: accesslog_pb2.AccessLogCommon
) -> dict[str, Any]:
    return {
        "start_time": common.start_time.ToJsonString() if common.HasField("start_time") else "",
        "reporter": attributes.reporter,
        "proxy": proxy,
        "upstream_cluster": common.upstream_cluster,
        "upstream_host": _address(common.upstream_remote_address),
        "downstream_remote_address": _address(common.downstream_remote_address),
        "response_flags": attributes.flags,
        "source_workload": attributes.source.workload,
        "source_namespace": attributes.source.namespace,
        "source_principal": attributes.source.principal,
        "destination_workload": attributes.destination.workload,
        "destination_namespace": attributes.destination.namespace,
        "destination_service": attributes.service.service,
        "destination_principal": attributes.destination.principal,
        "peer_principal": _peer_principal(attributes),
        "connection_security_policy": attributes.security,
    }


def http_record(
    proxy: str,
    attributes: Attributes,
    entry: accesslog_pb2.HTTPAccessLogEntry,
    duration_ms: float,
    request_bytes: int,
    response_bytes: int,
) -> dict[str, Any]:
    request, response = entry.request, entry.response
    return {
        **_common_record(proxy, attributes, entry.common_properties),
        "method": base_pb2.RequestMethod.Name(request.request_method)
        if request.request_method
        else "",
        "path": request.original_path or request.path,
        "authority": request.authority,
        "protocol": _protocol(entry.protocol_version),
        "response_code": response.response_code.value,
        "response_code_details": response.response_code_details,
        "duration_ms": round(duration_ms, 3),
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "request_id": request.request_id,
        "user_agent": request.user_agent,
    }


def tcp_record(
    proxy: str,
    attributes: Attributes,
    entry: accesslog_pb2.TCPAccessLogEntry,
    duration_ms: float,
) -> dict[str, Any]:
    return {
        **_common_record(proxy, attributes, entry.common_properties),
        "protocol": "tcp",
        "duration_ms": round(duration_ms, 3),
        "received_bytes": entry.connection_properties.received_bytes,
        "sent_bytes": entry.connection_properties.sent_bytes,
    }


def _protocol(version: int) -> str:
    return PROTOCOLS.get(version, "")


class AccessLogWriter:
    """JSON lines to a file (appended) or standard output; opened on first use."""

    def __init__(self, target: str = "-") -> None:
        self.target = target
        self._stream: IO[str] | None = None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        if self._stream is None:
            self._stream = sys.stdout if self.target == "-" else open(self.target, "a")  # noqa: SIM115
        self._stream.write(lines)
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        self._stream = None
