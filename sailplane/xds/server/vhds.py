"""VHDS on a delta stream: VirtualHost is a type the stream derives from its
route configs, not one the client subscribes to by name.

How Envoy 1.40 behaves (real Envoy, issue #20's experiment):

* It names nothing: after it accepts a route config with ``vhds`` it sends
  one empty VirtualHost request per stream (a namespace watch, nothing on
  the wire), and for route configs added later none at all. So the server
  pushes ``{RC}/*`` unasked, for every split route config the stream was
  sent (:attr:`VhdsState.namespaces`).
* Order: ``{RC}/*`` must come *after* the RDS response carrying RC (Envoy
  creates the VHDS watch while applying it); sent before, it is dropped,
  and as the first VirtualHost response of a stream it is never ACKed. So
  virtual hosts are only ever sent right after a route response, and only
  for the route configs sent by then; and if that route response is
  rejected before Envoy ever asked for virtual hosts, the ones sent behind
  it are not waited for.
* A route config's virtual hosts count as routes for make before break:
  removals of clusters wait until they are ACKed too (stream.py).
* When RC is unsubscribed Envoy drops its virtual hosts with it: the stream
  forgets them, nothing is sent (removals outside the stream's route
  configs would be ignored by Envoy anyway).
* On a new stream Envoy's first VirtualHost request carries
  ``initial_resource_versions``: when it is already waiting behind the
  route request, the server answers it instead of pushing everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sailplane.xds.resources import TypeResources
from sailplane.xds.server.requests import DeltaRequest
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.types import ROUTE, VIRTUAL_HOST
from sailplane.xds.vhds import namespace_of, vhds_view


class _RouteState(Protocol):
    @property
    def wanted(self) -> bool: ...

    wildcard: bool
    names: frozenset[str]


class VhdsState:
    """One delta stream's VHDS: whether it is on, the route configs whose
    virtual hosts the stream is owed, and whether the client has asked."""

    __slots__ = ("_followed", "asked", "enabled", "namespaces")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        # Split route configs sent on this stream (the last route response's).
        self.namespaces: frozenset[str] = frozenset()
        self.asked = False  # the client sent a VirtualHost request
        # (routes, subscription, wildcard) the virtual hosts last followed:
        # the same again (an endpoint change) has nothing new for them.
        self._followed: tuple[TypeResources, frozenset[str], bool] | None = None

    def forget(self) -> None:
        """The client may hold none of the virtual hosts sent (see delta.py)."""
        self.namespaces = frozenset()
        self._followed = None

    def served(self, type_url: str, snapshot: Snapshot) -> TypeResources:
        """Routes and virtual hosts as this stream is served them."""
        if not self.enabled or type_url not in (ROUTE, VIRTUAL_HOST):
            return snapshot.get(type_url)
        view = vhds_view(snapshot.get(ROUTE))
        if type_url == ROUTE:
            return view.routes
        return view.vhosts_for(self.namespaces)

    def routes_sent(self, routes: _RouteState | None, snapshot: Snapshot) -> bool:
        """After a route response (or none needed): note the split route
        configs the client now has; whether virtual hosts must follow."""
        if not self.enabled:
            return False
        resources = snapshot.get(ROUTE)
        followed = (resources, routes.names, routes.wildcard) if routes is not None else None
        if followed is not None and self._followed is not None:
            last = self._followed
            if last[0] is resources and last[1] is followed[1] and last[2] == followed[2]:
                return False
        self._followed = followed
        split = vhds_view(resources).namespaces
        if routes is None or not routes.wanted:
            now: frozenset[str] = frozenset()
        elif routes.wildcard:
            now = split
        else:
            now = frozenset(n for n in split if n in routes.names)
        moved = now != self.namespaces
        if moved:
            self.namespaces = now
        # Also when it shrank: the status (and make before break) must see
        # the stream's virtual hosts at the version it is now owed.
        return bool(now) or moved

    def within(self, names: Iterable[str]) -> list[str]:
        """Of ``names`` (removals), those in the stream's route configs."""
        namespaces = self.namespaces
        return [n for n in names if namespace_of(n) in namespaces]


def asking(inbox: Iterable[tuple[object, int]]) -> bool:
    """A VirtualHost request waits in the inbox (the stream's first: it
    carries what the client kept, so it is answered rather than pre-empted)."""
    return any(
        isinstance(request, DeltaRequest) and request.type_url == VIRTUAL_HOST
        for request, _ in inbox
    )


__all__ = ["VhdsState", "asking"]
