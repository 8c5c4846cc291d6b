"""The typed mesh model: frozen dataclasses, no protobuf, no I/O.

May import only ``sailplane.errors``; everything else may import it.
"""

from sailplane.model.hosts import host_aliases, resolve_host
from sailplane.model.mesh import MeshConfig, ObjectRef
from sailplane.model.registry import (
    Endpoint,
    Location,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    Workload,
    selector_matches,
)
from sailplane.model.source import Diagnostic, FieldPath, Position, Severity, Source

__all__ = [
    "Diagnostic",
    "Endpoint",
    "FieldPath",
    "Location",
    "MeshConfig",
    "ObjectRef",
    "Position",
    "Protocol",
    "Resolution",
    "Service",
    "ServicePort",
    "Severity",
    "Source",
    "Workload",
    "host_aliases",
    "resolve_host",
    "selector_matches",
]
