"""Pure translation: model + proxy -> Envoy protobuf resources. No I/O here."""

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
