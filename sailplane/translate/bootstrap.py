"""Envoy bootstrap files: the counterpart of ``istioctl kube-inject``.

A bootstrap only says who the proxy is and where the control plane is; every
listener, route and cluster then arrives over ADS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.extensions.resource_monitors.downstream_connections.v3 import (
    downstream_connections_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import json_format, struct_pb2

from sailplane.model.hosts import is_ip_address
from sailplane.model.registry import (
    NO_STATS_INCLUSION,
    Endpoint,
    Protocol,
    ServicePort,
    StatsInclusion,
    Workload,
)
from sailplane.translate.common import ads_config_source, duration, pack, socket_address
from sailplane.translate.endpoints import build_load_assignment, envoy_locality
from sailplane.translate.proxy import (
    META_APP_ADDRESS,
    META_INTERCEPTION,
    META_OUTBOUND,
    META_ROLE,
    Capture,
    Role,
)
from sailplane.translate.stats import apply_stats_config, merge

XDS_CLUSTER = "xds-grpc"
MAX_DOWNSTREAM_CONNECTIONS = 2147483647


@dataclass(frozen=True, slots=True)
class BootstrapCredentials:
    """Files a bootstrap points Envoy at to reach the mTLS xDS port."""

    cert_chain: Path
    private_key: Path
    root_cert: Path
    server_identity: str


def _xds_tls_socket(credentials: BootstrapCredentials) -> base_pb2.TransportSocket:
    """mTLS to the secure xDS port with the workload's bootstrap certificate,
    verifying that the server is sailplane (by its SPIFFE identity)."""
    context = tls_pb2.UpstreamTlsContext()
    common = context.common_tls_context
    common.tls_certificates.append(
        common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=str(credentials.cert_chain)),
            private_key=base_pb2.DataSource(filename=str(credentials.private_key)),
        )
    )
    common.validation_context.trusted_ca.filename = str(credentials.root_cert)
    common.validation_context.match_typed_subject_alt_names.append(
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(exact=credentials.server_identity),
        )
    )
    common.alpn_protocols.append("h2")
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


XdsAddress = tuple[str, int]


def xds_addresses(value: XdsAddress | Sequence[XdsAddress]) -> tuple[XdsAddress, ...]:
    """One ``(host, port)``, or several: the replicas of the control plane."""
    if len(value) == 2 and isinstance(value[0], str):
        return (cast(XdsAddress, value),)
    addresses = tuple(cast(Sequence[XdsAddress], value))
    if not addresses:
        raise ValueError("a bootstrap needs an xDS address")
    return addresses


def _xds_cluster(
    addresses: Sequence[XdsAddress], credentials: BootstrapCredentials | None = None
) -> cluster_pb2.Cluster:
    """The control plane: one endpoint per replica address (a DNS name gives
    one per address it resolves to). Envoy balances new ADS streams round
    robin, so a stream whose replica is gone reconnects to the next one."""
    static = all(is_ip_address(host) for host, _ in addresses)
    cluster = cluster_pb2.Cluster(
        name=XDS_CLUSTER,
        # A compose service name needs DNS; an address does not.
        type=cluster_pb2.Cluster.STATIC if static else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration(1),
    )
    port = ServicePort(addresses[0][1], "grpc", Protocol.GRPC)
    endpoints = tuple(Endpoint(address=host, ports={"grpc": number}) for host, number in addresses)
    cluster.load_assignment.CopyFrom(build_load_assignment(XDS_CLUSTER, port, endpoints))
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                # Keep the ADS connection alive through NATs and idle timeouts.
                connection_keepalive=protocol_pb2.KeepaliveSettings(
                    interval=duration(30), timeout=duration(10)
                )
            )
        )
    )
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].CopyFrom(pack(options))
    if credentials is not None:
        cluster.transport_socket.CopyFrom(_xds_tls_socket(credentials))
    return cluster


def build_bootstrap(
    workload: Workload,
    xds_address: XdsAddress | Sequence[XdsAddress],
    admin_address: tuple[str, int] = ("127.0.0.1", 15000),
    outbound_address: tuple[str, int] = ("127.0.0.1", 15001),
    app_address: str = "127.0.0.1",
    role: Role | None = None,
    credentials: BootstrapCredentials | None = None,
    delta: bool = False,
    capture: Capture | None = None,
    stats: StatsInclusion = NO_STATS_INCLUSION,
) -> bootstrap_pb2.Bootstrap:
    """``xds_address``: the control plane's ``(host, port)``, or several, one
    per replica (Envoy reconnects to another when one is gone).
    ``credentials`` (see :func:`sailplane.server.credentials.write_bootstrap_credentials`)
    make the proxy use the mTLS xDS port; without them it uses plaintext.
    ``delta``: incremental xDS (``DELTA_GRPC``) instead of state of the world.
    ``capture``: the proxy's INTERCEPTION_MODE; None: the WorkloadEntry's
    ``sidecar.istio.io/interceptionMode`` annotation if it has one, else
    nothing is written (proxy mode, the control plane's default).
    ``stats``: Envoy stats to keep besides the defaults (:mod:`sailplane.translate.stats`)
    and those the WorkloadEntry's annotations ask for."""
    if capture is None and workload.interception_mode:
        capture = Capture(workload.interception_mode)
    metadata = struct_pb2.Struct()
    values: dict[str, str] = {META_APP_ADDRESS: app_address}
    if capture is not Capture.TRANSPARENT:
        # Transparent capture has no HTTP proxy: iptables brings the app's
        # connections to virtualOutbound, whatever the app's settings.
        values[META_OUTBOUND] = f"{outbound_address[0]}:{outbound_address[1]}"
    if capture is not None:
        values[META_INTERCEPTION] = capture.value
    if role is not None:
        # Only when forced: otherwise the control plane decides (a workload a
        # Gateway selects is a gateway).
        values[META_ROLE] = role.value
    metadata.update(values)
    bootstrap = bootstrap_pb2.Bootstrap()
    bootstrap.node.id = workload.id
    bootstrap.node.cluster = f"{workload.labels.get('app', workload.name)}.{workload.namespace}"
    bootstrap.node.metadata.CopyFrom(metadata)
    if workload.locality:
        # Envoy's own locality, as Istio's agent sets it from the registry.
        bootstrap.node.locality.CopyFrom(envoy_locality(workload.locality))
    bootstrap.admin.address.CopyFrom(socket_address(*admin_address))
    ads = bootstrap.dynamic_resources.ads_config
    ads.api_type = (
        config_source_pb2.ApiConfigSource.DELTA_GRPC
        if delta
        else config_source_pb2.ApiConfigSource.GRPC
    )
    ads.transport_api_version = config_source_pb2.V3
    ads.set_node_on_first_message_only = True
    ads.grpc_services.append(
        grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=XDS_CLUSTER)
        )
    )
    bootstrap.dynamic_resources.cds_config.CopyFrom(ads_config_source())
    bootstrap.dynamic_resources.lds_config.CopyFrom(ads_config_source())
    xds_cluster = _xds_cluster(xds_addresses(xds_address), credentials)
    bootstrap.static_resources.clusters.append(xds_cluster)
    # As Istio's bootstrap: an explicit (generous) downstream connection limit,
    # which Envoy asks every deployment to configure.
    monitor = bootstrap.overload_manager.resource_monitors.add()
    monitor.name = "envoy.resource_monitors.global_downstream_max_connections"
    monitor.typed_config.Pack(
        downstream_connections_pb2.DownstreamConnectionsConfig(
            max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS
        )
    )
    apply_stats_config(bootstrap, merge(workload.stats_inclusion, stats))
    return bootstrap


def bootstrap_yaml(bootstrap: bootstrap_pb2.Bootstrap) -> str:
    # Round-trip through JSON: MessageToDict returns OrderedDicts for Any fields.
    data: dict[str, Any] = json.loads(
        json_format.MessageToJson(bootstrap, preserving_proto_field_name=True)
    )
    node = data.get("node", {})
    if "metadata" in node:
        # A Struct is a map, whose order changes from one process to the next:
        # sort it, so the same workload always gets the same bytes.
        node["metadata"] = dict(sorted(node["metadata"].items()))
    header = (
        f"# Envoy bootstrap for {bootstrap.node.id}, written by `sailplane bootstrap`.\n"
        "# Everything else (listeners, routes, clusters, secrets) arrives over ADS.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
