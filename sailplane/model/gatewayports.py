"""Which port a gateway workload listens on for a Gateway server's port.

Istio (pilot/pkg/model/gateway.go, resolvePorts, legacy selector): the
server's port is a port of the gateway's Service; the proxy listens on that
port's targetPort (the first Service selecting the gateway pod that has
it), or on the number itself when no Service has it. Here the gateway pod
is a WorkloadEntry, whose ``ports`` map a Service port *name* to the
instance's port, as for any instance (Endpoint.port_for).

Without a Service that has the port, two fallbacks keep configurations
without a gateway Service working: the workload's port named as the
server's port (sailplane's own examples: ``http`` -> 8080), then the name
Istio's default gateway Service gives the number (``http2`` 80, ``https``
443: the ``istio-ingressgateway`` Service every Istio install creates).
"""

from __future__ import annotations

from dataclasses import dataclass

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import GatewayServer
from sailplane.model.registry import Workload

# Istio's default gateway Service (manifests/charts/gateways): port -> name.
DEFAULT_GATEWAY_PORT_NAMES = {80: "http2", 443: "https", 15443: "tls"}


@dataclass(frozen=True, slots=True)
class GatewayPort:
    number: int  # what the gateway proxy binds
    via: str  # "service NS/NAME", "port name", "default gateway service", "" (as is)


def gateway_port(mesh: MeshConfig, workload: Workload, server: GatewayServer) -> GatewayPort:
    for service in mesh.services_of(workload):
        for port in service.ports:
            if port.number == server.port:
                return GatewayPort(
                    workload.endpoint().port_for(port),
                    f"{service.kind} {service.namespace}/{service.name}",
                )
    if server.port_name and server.port_name in workload.ports:
        return GatewayPort(workload.ports[server.port_name], "port name")
    default_name = DEFAULT_GATEWAY_PORT_NAMES.get(server.port, "")
    if default_name in workload.ports:
        return GatewayPort(workload.ports[default_name], "default gateway service")
    return GatewayPort(server.port, "")


def exposed(workload: Workload, found: GatewayPort) -> bool:
    """Whether the workload says it serves the port (a workload that lists
    no ports serves any)."""
    return bool(found.via) or not workload.ports or found.number in workload.ports.values()
