"""What the demo's view shows, read from the mesh in force and the proxies:
the mTLS state of each service and the split the ingress is configured for."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence

from sailplane.demo.layout import Placement
from sailplane.demo.pods import call_in
from sailplane.demo.view import ServiceTLS
from sailplane.model.mesh import MeshConfig
from sailplane.model.registry import Service, Workload, selector_matches
from sailplane.model.security import TLS_MODE_LABEL

VIRTUAL_INBOUND_PORT = 15006


def instances(mesh: MeshConfig, service: Service) -> tuple[Workload, ...]:
    return mesh.selected_workloads(service.namespace, service.selector or {})


def listener_stats(place: Placement, timeout: float = 0.5) -> tuple[int, int, int] | None:
    """(mTLS, plaintext, refused) connections accepted so far by the sidecar's
    inbound listeners, from its admin stats (listeners are named by address;
    a pod's admin answers inside the pod only)."""
    host, port = place.admin
    url = f"http://{host}:{port}/stats?filter=^listener\\."

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, OSError):
            return None

    text = fetch() if place.netns is None else call_in(place.netns, fetch, timeout + 1)
    if text is None:
        return None
    # A pod's sidecar takes every inbound connection on virtualInbound.
    ports = [VIRTUAL_INBOUND_PORT] if place.in_pod else place.ports
    address = "0.0.0.0" if place.in_pod else place.address
    prefixes = [f"listener.{address}_{p}." for p in ports]
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        for prefix in prefixes:
            if name.startswith(prefix) and value.strip().isdigit():
                key = name[len(prefix) :]
                values[key] = values.get(key, 0) + int(value)
    total = values.get("downstream_cx_total", 0)
    mtls = values.get("ssl.handshake", 0)
    refused = values.get("ssl.connection_error", 0)
    return mtls, max(total - mtls - refused, 0), refused


def callers_mode(mesh: MeshConfig, service: Service, members: Sequence[Workload]) -> str:
    """What a caller with a sidecar does: the DestinationRule's TLS mode, else
    auto mTLS when every instance runs a sidecar (labelled as such)."""
    rule = mesh.destination_rule_for(service.hostname)
    tls = rule.traffic_policy.tls if rule and rule.traffic_policy else None
    if tls is not None:
        return tls.mode
    if members and all(w.labels.get(TLS_MODE_LABEL) == "istio" for w in members):
        return "auto mTLS"
    return "plaintext"


def tls_state(mesh: MeshConfig, where: Sequence[Placement]) -> list[ServiceTLS]:
    """One row per service with instances in the demo."""
    placed = {p.workload.id: p for p in where if not p.is_gateway}
    rows = []
    for service in sorted(mesh.services, key=lambda s: s.hostname):
        members = [w for w in instances(mesh, service) if w.id in placed]
        if not members:
            continue
        modes = sorted({mesh.mtls_mode(w, port) for w in members for port in placed[w.id].ports})
        seen = [s for s in (listener_stats(placed[w.id]) for w in members) if s is not None]
        mtls, plaintext, refused = (
            (sum(s[i] for s in seen) for i in range(3)) if seen else (None, None, None)
        )
        rows.append(
            ServiceTLS(
                service=service.name,
                mode="/".join(modes) or "-",
                clients=callers_mode(mesh, service, members),
                mtls=mtls,
                plaintext=plaintext,
                refused=refused,
            )
        )
    return rows


def configured_split(mesh: MeshConfig, gateway: Placement | None) -> list[tuple[str, int]]:
    """The weights the ingress should show, by subset (or host): the first
    route of the first VirtualService bound to a Gateway that selects the
    ingress workload."""
    if gateway is None:
        return []
    keys = {
        g.key
        for g in mesh.gateways
        if g.selector and selector_matches(g.selector, gateway.workload.labels)
    }
    for vs in mesh.virtual_services:
        if not keys & set(vs.gateways):
            continue
        for route in vs.http:
            if len(route.route) == 1:
                only = route.route[0].destination
                return [(only.subset or only.host, 100)]
            if route.route:
                return [(r.destination.subset or r.destination.host, r.weight) for r in route.route]
    return []
