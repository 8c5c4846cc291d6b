"""Pure translation: model + proxy -> Envoy protobuf resources. No I/O here.

One module per Envoy resource type or feature (clusters, endpoints,
listeners, routes, httproute, authz, mtls, telemetry, gateway, egress, ...);
``bootstrap.py`` builds Envoy bootstraps; ``impact.py`` says what a
configuration change touches. May import the model, ``errors`` and
``memo``; never ``config``, ``xds`` or gRPC.
"""

from sailplane.translate.build import (
    ProxyResources,
    build_proxy_resources,
    build_routes,
)
from sailplane.translate.proxy import Proxy, Role, proxy_from_node

__all__ = [
    "Proxy",
    "ProxyResources",
    "Role",
    "build_proxy_resources",
    "build_routes",
    "proxy_from_node",
]
