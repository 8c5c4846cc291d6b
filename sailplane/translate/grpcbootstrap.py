"""gRPC xDS bootstrap files (``GRPC_XDS_BOOTSTRAP``): what a proxyless gRPC
application reads to find sailplane (gRFC A27, its ``xds_servers`` and
``node``).

The node says ``GENERATOR: grpc`` (Istio's key), so sailplane sends it the
resources of grpcgen.py instead of an Envoy's.
"""

from __future__ import annotations

import json
from typing import Any

from sailplane.model.registry import Workload
from sailplane.translate.proxy import GRPC_GENERATOR, META_GENERATOR

# Istio's node metadata key for the workload's namespace.
META_NAMESPACE = "NAMESPACE"


def build_grpc_bootstrap(workload: Workload, xds_address: tuple[str, int]) -> dict[str, Any]:
    """The plaintext xDS port, ``insecure`` channel credentials. Not yet
    ``tls`` (gRFC A65): gRPC verifies the server's hostname, and sailplane's
    xDS certificate names only its SPIFFE identity."""
    host, port = xds_address
    if ":" in host:
        host = f"[{host}]"
    node: dict[str, Any] = {
        "id": workload.id,
        "cluster": f"{workload.labels.get('app', workload.name)}.{workload.namespace}",
        "metadata": {META_GENERATOR: GRPC_GENERATOR, META_NAMESPACE: workload.namespace},
    }
    if workload.locality:
        where = workload.locality
        node["locality"] = {"region": where.region, "zone": where.zone, "sub_zone": where.subzone}
    return {
        "xds_servers": [
            {
                "server_uri": f"{host}:{port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": node,
    }


def grpc_bootstrap_json(bootstrap: dict[str, Any]) -> str:
    return json.dumps(bootstrap, indent=2, sort_keys=True) + "\n"
