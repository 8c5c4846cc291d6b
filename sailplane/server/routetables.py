"""Sidecar route tables, built incrementally from encoded virtual hosts.

A sidecar's outbound route table holds one virtual host per service port of
the mesh: at 1,000 services, ~0.6 MB in one RouteConfiguration that every
sidecar with the same :func:`~sailplane.translate.build.routes_key` shares.
A VirtualService change alters one or two of those virtual hosts, so each
virtual host is kept encoded, and a table is re-assembled from the kept
bytes with only the virtual hosts of changed services re-translated (see
translate/impact.py for what "changed" covers). The assembled bytes are
exactly those of serialising the whole RouteConfiguration (xds/wire.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import VirtualService
from sailplane.model.registry import Service
from sailplane.model.sidecar import Sidecar
from sailplane.translate.connect import connect_virtual_hosts
from sailplane.translate.egress import catch_all_virtual_host
from sailplane.translate.proxy import Proxy
from sailplane.translate.routes import (
    PlannedVirtualHost,
    build_outbound_virtual_host,
    outbound_route_shell,
    plan_outbound_virtual_hosts,
)
from sailplane.translate.vshosts import virtual_service_host_vhosts
from sailplane.xds import ROUTE, TypeResources
from sailplane.xds.vhds import mark_split_source
from sailplane.xds.wire import field_entry, splice_repeated

_VIRTUAL_HOSTS_FIELD = 2  # RouteConfiguration.virtual_hosts


@dataclass(frozen=True, slots=True)
class _Plan:
    """The virtual hosts of a table; reused while the services are the same."""

    services: tuple[Service, ...]
    sidecar: Sidecar | None
    hosts: tuple[PlannedVirtualHost, ...]


@dataclass(frozen=True, slots=True)
class RouteTable:
    """One sidecar route table: the resource, and what it was assembled from."""

    resources: TypeResources
    plan: _Plan
    # virtual host name -> (its domains, its encoded `virtual_hosts` entry)
    entries: Mapping[str, tuple[tuple[str, ...], bytes]]
    # its VirtualService-only and CONNECT virtual hosts, encoded `virtual_hosts` entries
    tunnels: tuple[bytes, ...] = ()
    # the VirtualServices they were built from (unchanged ones keep their identity)
    virtual_services: tuple[VirtualService, ...] = ()


def build_sidecar_route_table(
    mesh: MeshConfig,
    proxy: Proxy,
    previous: RouteTable | None = None,
    changed_hosts: frozenset[str] | None = None,
) -> RouteTable:
    """``proxy``'s outbound route table. With ``previous`` (the same
    routes_key's table of the configuration before) only the virtual hosts
    of ``changed_hosts`` and those whose domains moved are re-translated;
    ``changed_hosts=None`` re-translates all of them."""
    namespace = proxy.namespace
    sidecar = mesh.sidecar_for(proxy.workload)
    plan = previous.plan if previous is not None else None
    if plan is None or plan.sidecar != sidecar or plan.services != mesh.services:
        hosts = plan_outbound_virtual_hosts(mesh, namespace, sidecar)
        plan = _Plan(mesh.services, sidecar, tuple(hosts))
    if previous is not None and changed_hosts is not None:
        unchanged = plan is previous.plan and mesh.virtual_services == previous.virtual_services
        if not changed_hosts and unchanged:
            return previous  # nothing of it changed: same object, nothing pushed
        kept = previous.entries
    else:
        kept = {}
    # VirtualService hosts no service has (translate/vshosts.py) and ``tls``
    # rules as CONNECT routes (translate/connect.py): few, so built whole
    # whenever a VirtualService or any route may have changed.
    labels = proxy.workload.labels
    claimed = {domain for planned in plan.hosts for domain in planned.domains}
    named = list(virtual_service_host_vhosts(mesh, namespace, labels, sidecar, claimed))
    claimed.update(domain for vhost in named for domain in vhost.domains)
    connect = connect_virtual_hosts(mesh, namespace, labels, sidecar, claimed)
    tunnels = tuple(
        field_entry(_VIRTUAL_HOSTS_FIELD, vhost.SerializeToString(deterministic=True))
        for vhost in (*named, *connect)
    )
    entries: dict[str, tuple[tuple[str, ...], bytes]] = {}
    for planned in plan.hosts:
        found = kept.get(planned.name)
        if (
            found is None
            or found[0] != planned.domains
            or planned.service.hostname in (changed_hosts or ())
        ):
            vhost = build_outbound_virtual_host(mesh, planned, namespace, proxy.workload.labels)
            encoded = vhost.SerializeToString(deterministic=True)
            found = (planned.domains, field_entry(_VIRTUAL_HOSTS_FIELD, encoded))
        entries[planned.name] = found
    catch_all = catch_all_virtual_host(mesh.outbound_mode(proxy.workload))
    body = (
        *(entry for _, entry in entries.values()),
        *tunnels,
        field_entry(_VIRTUAL_HOSTS_FIELD, catch_all.SerializeToString(deterministic=True)),
    )
    resources = _assemble(body, previous)
    return RouteTable(resources, plan, entries, tunnels, mesh.virtual_services)


def _assemble(body: tuple[bytes, ...], previous: RouteTable | None) -> TypeResources:
    shell = outbound_route_shell()
    encoded = shell.SerializeToString(deterministic=True)
    value = splice_repeated(encoded, _VIRTUAL_HOSTS_FIELD, body)
    # vhds: delta streams get it as VHDS virtual hosts (xds/vhds.py), so a
    # change to one service sends one virtual host, not the table.
    resources = TypeResources.from_values(ROUTE, [(shell.name, value)], vhds=True)
    if previous is not None and previous.resources.version == resources.version:
        return previous.resources  # unchanged: keep the object, push nothing
    # Split for VHDS from the previous table's split: unchanged virtual hosts
    # are the same entry objects (see build_sidecar_route_table).
    mark_split_source(resources, encoded, body, previous.resources if previous else None)
    return resources
