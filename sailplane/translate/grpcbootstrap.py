"""gRPC xDS bootstrap files (``GRPC_XDS_BOOTSTRAP``): what a proxyless gRPC
application reads to find sailplane (gRFC A27, its ``xds_servers`` and
``node``).

The node says ``GENERATOR: grpc`` (Istio's key), so sailplane sends it the
resources of grpcgen.py instead of an Envoy's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sailplane.model.registry import Workload
from sailplane.translate.bootstrap import BootstrapCredentials, XdsAddress, xds_addresses
from sailplane.translate.grpcserver import SERVER_LISTENER_TEMPLATE
from sailplane.translate.grpctls import CERTIFICATE_PROVIDER
from sailplane.translate.proxy import GRPC_GENERATOR, META_GENERATOR

# Istio's node metadata key for the workload's namespace.
META_NAMESPACE = "NAMESPACE"


def build_grpc_bootstrap(
    workload: Workload,
    xds_address: XdsAddress | Sequence[XdsAddress],
    credentials: BootstrapCredentials | None = None,
) -> dict[str, Any]:
    """Without ``credentials``: the plaintext xDS port, ``insecure`` channel
    credentials. With them: the mTLS xDS port with ``tls`` channel
    credentials (gRFC A65: the workload's certificate, and sailplane's
    checked against the CA and the server URI's host), and the same files
    as the ``default`` ``file_watcher`` certificate provider (A29), which
    the TLS contexts of grpctls.py name for the mesh's own mTLS."""
    node: dict[str, Any] = {
        "id": workload.id,
        "cluster": f"{workload.labels.get('app', workload.name)}.{workload.namespace}",
        "metadata": {META_GENERATOR: GRPC_GENERATOR, META_NAMESPACE: workload.namespace},
    }
    if workload.locality:
        where = workload.locality
        node["locality"] = {"region": where.region, "zone": where.zone, "sub_zone": where.subzone}
    channel_creds: list[dict[str, Any]] = [{"type": "insecure"}]
    bootstrap: dict[str, Any] = {
        # Several replicas: gRPC falls back to the next when one is gone (gRFC A71).
        "xds_servers": [
            {
                "server_uri": _uri(host, port),
                "channel_creds": channel_creds,
                "server_features": ["xds_v3"],
            }
            for host, port in xds_addresses(xds_address)
        ],
        "node": node,
        # gRFC A36: what an xDS-enabled server asks LDS for (grpcserver.py).
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }
    if credentials is not None:
        files = {
            "certificate_file": str(credentials.cert_chain),
            "private_key_file": str(credentials.private_key),
            "ca_certificate_file": str(credentials.root_cert),
        }
        channel_creds[0] = {"type": "tls", "config": files}
        bootstrap["certificate_providers"] = {
            CERTIFICATE_PROVIDER: {
                "plugin_name": "file_watcher",
                # Istio's refresh interval (grpcxds.GenerateBootstrap).
                "config": {**files, "refresh_interval": "900s"},
            }
        }
    return bootstrap


def _uri(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def grpc_bootstrap_json(bootstrap: dict[str, Any]) -> str:
    return json.dumps(bootstrap, indent=2, sort_keys=True) + "\n"
