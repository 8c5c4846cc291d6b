"""Synthetic meshes: N services x P ports, W workloads per service.

The generator writes the same Kubernetes-shaped YAML a user would (``v1
Service`` + ``networking.istio.io/v1 WorkloadEntry``) and loads it through
:func:`sailplane.config.loader.load_texts`, so the benchmark exercises the
real parser and validator, not a shortcut into the model.

A mesh is a pure function of its :class:`MeshSpec`; a configuration change is
a different spec (``dataclasses.replace(spec, extra_endpoints=1)``), so every
run sees exactly the same inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sailplane.config.loader import load_texts
from sailplane.model.mesh import MeshConfig

FIRST_PORT = 8000
# Workloads get 127.1.0.1, 127.1.0.2, ...: never 127.0.0.1, which the sidecars'
# outbound listener and the apps use.
_ADDRESS_BASE = (1 << 16) + 1


@dataclass(frozen=True, slots=True)
class MeshSpec:
    services: int = 1000
    ports: int = 2
    workloads_per_service: int = 1
    namespaces: int = 1
    # Extra WorkloadEntries for the first service: the "one endpoint added" change.
    extra_endpoints: int = 0
    # Added to every port number of the first service: the "port changed" change.
    port_shift: int = 0
    # DestinationRule subsets v1..vN per service (workloads are labelled
    # version v1/v2) and a VirtualService splitting traffic between them.
    subsets: int = 0
    # Moved from v1 to v2 in the first service's VirtualService: the
    # "weight changed" change.
    weight_shift: int = 0

    @property
    def workloads(self) -> int:
        return self.services * self.workloads_per_service + self.extra_endpoints


def namespace_of(service: int, spec: MeshSpec) -> str:
    return "default" if spec.namespaces == 1 else f"ns-{service % spec.namespaces:03d}"


def service_name(service: int) -> str:
    return f"svc-{service:05d}"


def workload_address(index: int) -> str:
    value = _ADDRESS_BASE + index
    if value >= 1 << 24:
        raise ValueError(f"workload {index} does not fit in 127.0.0.0/8")
    return f"127.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _service_yaml(service: int, spec: MeshSpec) -> str:
    name = service_name(service)
    shift = spec.port_shift if service == 0 else 0
    ports = "".join(
        f"  - name: http-{p}\n"
        f"    port: {FIRST_PORT + p + shift}\n"
        f"    targetPort: {FIRST_PORT + p}\n"
        for p in range(spec.ports)
    )
    return (
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {namespace_of(service, spec)}\n"
        "spec:\n"
        "  selector:\n"
        f"    app: {name}\n"
        "  ports:\n" + ports
    )


def _workload_yaml(service: int, replica: int, index: int, spec: MeshSpec) -> str:
    name = service_name(service)
    return (
        "apiVersion: networking.istio.io/v1\n"
        "kind: WorkloadEntry\n"
        "metadata:\n"
        f"  name: {name}-{replica}\n"
        f"  namespace: {namespace_of(service, spec)}\n"
        "spec:\n"
        f"  address: {workload_address(index)}\n"
        f"  serviceAccount: {name}\n"
        "  labels:\n"
        f"    app: {name}\n"
        f"    version: v{replica % 2 + 1}\n"
    )


def _traffic_yaml(service: int, spec: MeshSpec) -> str:
    name = service_name(service)
    namespace = namespace_of(service, spec)
    subsets = "".join(
        f"  - name: v{k + 1}\n    labels:\n      version: v{k + 1}\n" for k in range(spec.subsets)
    )
    first = 90 - (spec.weight_shift % 90 if service == 0 else 0)
    rest = (100 - first) // max(1, spec.subsets - 1)
    weights = [first] + [rest] * (spec.subsets - 1)
    weights[-1] += 100 - sum(weights)
    routes = "".join(
        f"    - destination:\n        host: {name}\n        subset: v{k + 1}\n"
        f"      weight: {weight}\n"
        for k, weight in enumerate(weights)
    )
    return (
        "apiVersion: networking.istio.io/v1\n"
        "kind: DestinationRule\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"spec:\n  host: {name}\n  subsets:\n" + subsets + "---\n"
        "apiVersion: networking.istio.io/v1\n"
        "kind: VirtualService\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"spec:\n  hosts:\n  - {name}\n  http:\n  - route:\n" + routes
    )


def generate_texts(spec: MeshSpec) -> list[tuple[str, str]]:
    """``(file name, YAML text)`` pairs: one file of Services, one of WorkloadEntries."""
    services = [_service_yaml(s, spec) for s in range(spec.services)]
    per_service = spec.workloads_per_service
    workloads = [
        _workload_yaml(s, replica, s * per_service + replica, spec)
        for s in range(spec.services)
        for replica in range(per_service)
    ]
    # Extra endpoints take addresses after everyone else's, so adding one
    # changes no other workload.
    workloads.extend(
        _workload_yaml(0, per_service + k, spec.services * per_service + k, spec)
        for k in range(spec.extra_endpoints)
    )
    texts = [
        ("services.yaml", "---\n".join(services)),
        ("workloads.yaml", "---\n".join(workloads)),
    ]
    if spec.subsets:
        traffic = [_traffic_yaml(s, spec) for s in range(spec.services)]
        texts.append(("traffic.yaml", "---\n".join(traffic)))
    return texts


def write_texts(root: Path, texts: list[tuple[str, str]]) -> list[str]:
    """Write the files that differ from what is on disk, each atomically (a
    hidden temporary file renamed over it, as editors save), so a watcher
    sees one complete change per file. Returns the names written."""
    written = []
    for name, text in texts:
        path = root / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        temporary = root / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
        written.append(name)
    return written


def load_mesh(spec: MeshSpec) -> MeshConfig:
    """Generate and load; raises if the generator produced anything invalid."""
    result = load_texts(generate_texts(spec))
    if result.mesh is None or result.errors:
        problems = "; ".join(d.format() for d in result.diagnostics[:5])
        raise RuntimeError(f"generated mesh does not load: {problems}")
    return result.mesh


def proxy_ids(spec: MeshSpec, count: int) -> list[str]:
    """``count`` distinct proxy node ids (``NAME.NAMESPACE``), spread over services."""
    if count > spec.services * spec.workloads_per_service:
        raise ValueError(
            f"{count} proxies need {count} workloads; the mesh has "
            f"{spec.services} services x {spec.workloads_per_service} workloads"
        )
    ids = []
    for i in range(count):
        service, replica = i % spec.services, i // spec.services
        ids.append(f"{service_name(service)}-{replica}.{namespace_of(service, spec)}")
    return ids
