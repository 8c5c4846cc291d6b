"""VHDS for delta clients: a large route table served as a small
RouteConfiguration plus one ``VirtualHost`` resource per virtual host, so a
change to one virtual host sends that one (~0.6 KB), not the table (~0.6 MB).

Envoy's rules (1.40, checked with real Envoy; /tmp/h20v/findings.md of #20):

* VHDS works only on a delta (``DELTA_GRPC``) ADS stream; state-of-the-world
  streams keep the inline tables. The RouteConfiguration carries
  ``vhds: {config_source: {ads: {}, resource_api_version: V3}}``, byte for
  byte the same in every update: dropping it wipes the VHDS virtual hosts,
  changing its source opens another stream.
* A VirtualHost resource is named ``"{route config}/{key}"`` and
  ``VirtualHost.name`` must be that same string (Envoy keys the table by
  ``VirtualHost.name`` and files a resource under the route config named by
  what precedes its *last* ``/``): so ``key`` has no ``/`` (escaped here).
* Every virtual host moves, the catch-all included: the route config then
  never changes for a weight edit, and a namespace always has a resource
  (a route config whose VHDS namespace gets none warms for 15 s).
* One ``*`` per route config and unique domains across its virtual hosts:
  the inline table already obeys both (Envoy rejects it otherwise), so a
  faithful split does too.

Which tables are split is the builder's choice: a :class:`TypeResources`
built with ``vhds=True`` (sailplane's shared sidecar tables). The split is
computed once per shared object and remembered on it (:func:`vhds_view`),
never per proxy; a proxy's layered routes (its own inbound configs over the
shared table) compose the parts' views without copying them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable

from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from sailplane.xds.encoding import payload
from sailplane.xds.resources import TypeResources, empty, merge_types
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.types import ROUTE, VIRTUAL_HOST
from sailplane.xds.wire import field_end, field_entry, read_varint

log = logging.getLogger("sailplane.xds.vhds")

_VIRTUAL_HOSTS_FIELD = 2  # RouteConfiguration.virtual_hosts
_VHDS_FIELD = 9  # RouteConfiguration.vhds
_NAME_FIELD = 1  # VirtualHost.name
_MEMO = "_vhds_view"
_SOURCE = "_vhds_source"
_RESTRICTED_KEPT = 16


def _vhds_entry() -> bytes:
    config = route_pb2.RouteConfiguration()
    config.vhds.config_source.ads.SetInParent()
    config.vhds.config_source.resource_api_version = config_source_pb2.ApiVersion.V3
    encoded: bytes = config.SerializeToString(deterministic=True)
    return encoded


# The encoded ``vhds`` field, the same bytes in every route config and update.
VHDS_ENTRY = _vhds_entry()


def vhost_key(name: str) -> str:
    """A virtual host's name as the part after the ``/``: no ``/`` in it."""
    return name.replace("%", "%25").replace("/", "%2F")


def namespace_of(resource_name: str) -> str:
    """The route config a VirtualHost resource belongs to (Envoy: before the last ``/``)."""
    return resource_name.rpartition("/")[0]


def _fields(data: bytes) -> Iterable[tuple[int, int, int]]:
    """(field number, start, end) of each top-level field of an encoded message."""
    pos = 0
    while pos < len(data):
        tag, value_at = read_varint(data, pos)
        end = field_end(data, value_at, tag & 7)
        yield tag >> 3, pos, end
        pos = end


def _renamed(vhost: bytes, route_config: str) -> tuple[str, bytes]:
    """``vhost`` (an encoded VirtualHost) renamed ``{route_config}/{key}``."""
    if vhost[:1] == b"\x0a":  # the name first, as a deterministic serialiser writes it
        length, start = read_varint(vhost, 1)
        name, rest = vhost[start : start + length].decode(), vhost[start + length :]
    else:
        name, parts = "", []
        for number, start, end in _fields(vhost):
            if number == _NAME_FIELD:
                length, value_at = read_varint(vhost, start + 1)
                name = vhost[value_at : value_at + length].decode()
            else:
                parts.append(vhost[start:end])
        rest = b"".join(parts)
    full = f"{route_config}/{vhost_key(name)}"
    return full, field_entry(_NAME_FIELD, full.encode()) + rest


def split_route_config(name: str, value: bytes) -> tuple[bytes, list[tuple[str, bytes]]] | None:
    """(the route config without its virtual hosts and with ``vhds``, its
    virtual hosts as VirtualHost resources), or None when it is not to be
    split: no virtual hosts, VHDS already, or duplicate virtual host names."""
    shell: list[bytes] = []
    vhosts: list[tuple[str, bytes]] = []
    for number, start, end in _fields(value):
        if number == _VHDS_FIELD:
            return None
        if number == _VIRTUAL_HOSTS_FIELD:
            length, value_at = read_varint(value, start + 1)
            vhosts.append(_renamed(value[value_at : value_at + length], name))
        else:
            shell.append(value[start:end])
    if not vhosts:
        return None
    if len({n for n, _ in vhosts}) != len(vhosts):
        log.warning("route config %s: duplicate virtual host names; served inline", name)
        return None
    # Fields in number order, as the rest of the config is: vhds (9) after
    # the fields numbered below it.
    at = next(
        (i for i, part in enumerate(shell) if read_varint(part, 0)[0] >> 3 > _VHDS_FIELD),
        len(shell),
    )
    shell.insert(at, VHDS_ENTRY)
    return b"".join(shell), vhosts


class VhdsView:
    """A route TypeResources as a delta client is served it: ``routes`` (the
    split route configs and the others as they were), ``vhosts`` (the
    VirtualHosts of every split route config) and ``namespaces`` (their
    names). Immutable; shared by every stream with the same routes."""

    __slots__ = ("_restricted", "namespaces", "order", "routes", "vhosts")

    def __init__(
        self,
        routes: TypeResources,
        vhosts: TypeResources,
        namespaces: frozenset[str],
        order: tuple[str, ...] = (),
    ) -> None:
        self.routes = routes
        self.vhosts = vhosts
        self.namespaces = namespaces
        # The VirtualHost names in the order of the table's entries (a table
        # marked with mark_split_source: what its successor's split reuses).
        self.order = order
        self._restricted: dict[frozenset[str], TypeResources] = {}

    def vhosts_for(self, route_configs: frozenset[str]) -> TypeResources:
        """The VirtualHosts of those of ``route_configs`` that are split: what
        a stream that was sent those route configs has to have. One object
        per distinct set (streams subscribing the same configs share it)."""
        if route_configs == self.namespaces:
            return self.vhosts
        wanted = route_configs & self.namespaces
        if wanted == self.namespaces:
            return self.vhosts
        if not wanted:
            return _NO_VHOSTS
        found = self._restricted.get(wanted)
        if found is None:
            names = [n for n in self.vhosts.chunks if namespace_of(n) in wanted]
            found = self.vhosts.subset(names, "vhds:" + ",".join(sorted(wanted)))
            if len(self._restricted) >= _RESTRICTED_KEPT:
                self._restricted.clear()
            self._restricted[wanted] = found
        return found


_NO_VHOSTS = empty(VIRTUAL_HOST)


def mark_split_source(
    resources: TypeResources,
    shell: bytes,
    entries: tuple[bytes, ...],
    previous: TypeResources | None,
) -> None:
    """Tell the split how ``resources`` (one route config, ``vhds=True``)
    was assembled: ``shell`` (the config without virtual hosts) and its
    ``virtual_hosts`` entries in order, and the table it replaces. Its split
    then renames only the entries that are not the very objects of the
    previous table's (an incremental build keeps those of unchanged virtual
    hosts), and keeps every other VirtualHost resource, bytes and version,
    as it was: a change to one service of 5,000 splits one virtual host."""
    before = weakref.ref(previous) if previous is not None else None
    resources.__dict__[_SOURCE] = (shell, entries, before)


def _entry_value(entry: bytes) -> bytes:
    """The VirtualHost inside one encoded ``virtual_hosts`` entry."""
    length, start = read_varint(entry, 1)
    return entry[start : start + length]


def _split_from_previous(resources: TypeResources) -> VhdsView | None:
    """The split of a marked table from its predecessor's (see
    :func:`mark_split_source`); None when there is nothing to build on."""
    source = resources.__dict__.get(_SOURCE)
    previous = source[2]() if source is not None and source[2] is not None else None
    if source is None or previous is None or len(resources.chunks) != 1:
        return None
    before: VhdsView | None = previous.__dict__.get(_MEMO)
    old_source = previous.__dict__.get(_SOURCE)
    if (
        before is None
        or old_source is None
        or old_source[0] != source[0]  # another shell (or name): split it whole
        or len(before.order) != len(old_source[1])
    ):
        return None
    (name,) = resources.chunks
    old_entries, old_order = old_source[1], before.order
    at = {id(entry): i for i, entry in enumerate(old_entries)}
    order: list[str] = []
    changed: list[tuple[str, bytes]] = []
    for entry in source[1]:
        i = at.get(id(entry))
        if i is not None and old_entries[i] is entry:
            order.append(old_order[i])
        else:
            full, vhost = _renamed(_entry_value(entry), name)
            order.append(full)
            changed.append((full, vhost))
    kept = set(order)
    if len(kept) != len(order):
        return None  # duplicate names: the whole split decides (served inline)
    removed = [n for n in before.vhosts.chunks if n not in kept]
    vhosts = before.vhosts.replace(TypeResources.from_values(VIRTUAL_HOST, changed), removed)
    return VhdsView(before.routes, vhosts, before.namespaces, tuple(order))


def _split(resources: TypeResources) -> VhdsView:
    found = _split_from_previous(resources)
    if found is not None:
        return found
    routes: list[tuple[str, bytes]] = []
    vhosts: list[tuple[str, bytes]] = []
    namespaces = set()
    for name, encoded in resources.chunks.items():
        value = any_pb2.Any.FromString(payload(encoded)).value
        split = split_route_config(name, value)
        if split is None:
            routes.append((name, value))
            continue
        routes.append((name, split[0]))
        vhosts.extend(split[1])
        namespaces.add(name)
    if not namespaces:
        return VhdsView(resources, _NO_VHOSTS, frozenset())
    return VhdsView(
        TypeResources.from_values(ROUTE, routes),
        TypeResources.from_values(VIRTUAL_HOST, vhosts),
        frozenset(namespaces),
        tuple(n for n, _ in vhosts) if resources.__dict__.get(_SOURCE) else (),
    )


def vhds_view(resources: TypeResources) -> VhdsView:
    """``resources`` (route configs) as served over VHDS, remembered on the
    object: once per shared table, and per proxy only the composition of
    its own (inline) route configs with the shared table's view."""
    found: VhdsView | None = resources.__dict__.get(_MEMO)
    if found is not None:
        return found
    parts = resources.parts()
    if len(parts) == 2:
        own, shared = (vhds_view(part) for part in parts)
        if not (own.namespaces or shared.namespaces):
            found = VhdsView(resources, _NO_VHOSTS, frozenset())
        else:
            found = VhdsView(
                merge_types(shared.routes, own.routes),
                merge_types(shared.vhosts, own.vhosts),
                shared.namespaces | own.namespaces,
            )
    elif resources.vhds:
        found = _split(resources)
    else:
        found = VhdsView(resources, _NO_VHOSTS, frozenset())
    resources.__dict__[_MEMO] = found
    return found


def delta_version(snapshot: Snapshot, type_url: str) -> str:
    """The version of ``type_url`` a delta stream that subscribed every route
    config of ``snapshot`` is served (what its status shows once SYNCED):
    routes and virtual hosts as VHDS has them, other types the snapshot's."""
    if type_url not in (ROUTE, VIRTUAL_HOST):
        return snapshot.version(type_url)
    view = vhds_view(snapshot.get(ROUTE))
    return (view.routes if type_url == ROUTE else view.vhosts).version


__all__ = [
    "VHDS_ENTRY",
    "VhdsView",
    "delta_version",
    "mark_split_source",
    "namespace_of",
    "split_route_config",
    "vhds_view",
    "vhost_key",
]
