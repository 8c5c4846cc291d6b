"""Envoy resource names, following Istio so users' habits carry over."""

from __future__ import annotations


def outbound_cluster_name(port: int, hostname: str, subset: str = "") -> str:
    """``outbound|5000|single|weather-backend.default.svc.cluster.local``."""
    return f"outbound|{port}|{subset}|{hostname}"


def inbound_cluster_name(port: int) -> str:
    """``inbound|5000||`` (the workload port)."""
    return f"inbound|{port}||"


def inbound_route_name(port: int) -> str:
    """``inbound|5000||``: the inbound route configuration of a workload port,
    named as its cluster (Istio's name for it)."""
    return f"inbound|{port}||"


def listener_name(address: str, port: int) -> str:
    """Istio names listeners by what they bind: ``127.0.0.1_15001``."""
    return f"{address}_{port}"


# A sidecar's outbound route table: one name whatever port its outbound
# listener is on (Istio's outbound capture port, as Istio names route
# configurations by port). Sidecars whose tables differ only in that port
# (several on one host, each with its own) then share one table: translated,
# encoded, split for VHDS and diffed once per change, not once per port.
OUTBOUND_ROUTE_NAME = "15001"


def virtual_host_name(hostname: str, port: int) -> str:
    return f"{hostname}:{port}"
