"""Incremental ADS (``DeltaAggregatedResources``), beside state of the world.

Protocol rules implemented here (envoyproxy.io, "xDS REST and gRPC protocol",
incremental variants):

* Each resource has its own version (a hash of its encoded bytes, see
  encoding.py). A response carries only resources the client lacks or has at
  another version, and ``removed_resources`` for those it has that no longer
  exist. ``system_version_info`` is the snapshot's version of the type, which
  is what ``/debug/syncz`` shows, exactly as for state-of-the-world streams.
* Subscriptions change by difference: ``resource_names_subscribe`` adds,
  ``resource_names_unsubscribe`` removes; unsubscribing a name never
  subscribed is ignored. ``*`` subscribes to everything (wildcard); so does
  an empty first request for clusters or listeners (legacy wildcard).
* ``initial_resource_versions`` (first request of a type on a new stream):
  what the client kept from a previous stream. We send only what is missing
  or stale, and remove what no longer exists.
* Every response has its own nonce and is ACKed or NACKed by it. A NACK
  leaves the client on what it had; we record the error and do not resend
  the same content (the next change is sent).
* Make before break, as for state of the world: types are pushed in the order
  secrets, clusters, endpoints, listeners, routes, virtual hosts; removals of
  clusters and endpoints wait until listeners, routes and virtual hosts are
  ACKed at their new versions.
  Endpoints of *changed* clusters are re-sent after the cluster response:
  Envoy re-warms a changed cluster and waits for its endpoints.
* VHDS (vhds.py): route tables built for it are served as small route
  configs plus one VirtualHost per virtual host, which the stream pushes
  unasked right after the route response that carries their route config.

What a stream knows of the client is kept small and shared: "everything
covered by the subscription, at the versions of TypeResources X" (X is shared
by all proxies with that configuration) plus a small per-stream overlay of
exceptions. A push then costs, per stream, the set of names that differ
between two shared TypeResources, computed once for all streams.

What a client sends accumulates here (each request adds names), so each
type's subscription and overlay, and the responses left unanswered, are
bounded (limits.py): past a bound the stream ends with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from sailplane.errors import LimitExceeded
from sailplane.memo import WeakIdentityMemo
from sailplane.xds.encoding import encode_nonce
from sailplane.xds.resources import TypeResources
from sailplane.xds.server.context import Context, StreamContext
from sailplane.xds.server.requests import DeltaRequest, intern_names, parse_delta_request
from sailplane.xds.server.status import StreamStatus
from sailplane.xds.server.stream import StreamCore
from sailplane.xds.server.vhds import VhdsState, asking
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    PUSH_ORDER,
    ROUTE,
    SHORT_NAMES,
    VIRTUAL_HOST,
    WILDCARD_TYPES,
)

log = logging.getLogger("sailplane.xds.delta")

_REFERENCED_TYPES = (CLUSTER, ENDPOINT)


@dataclass(slots=True)
class _DeltaType:
    """One type's subscription and what the client has."""

    subscribed: bool = False
    wildcard: bool = False
    # Shared between streams that subscribed the same names (see union).
    names: frozenset[str] = frozenset()
    # The client has every covered resource of `base` at base's versions,
    # except where `overlay` says otherwise (a version, or None: absent).
    base: TypeResources | None = None
    overlay: dict[str, str | None] = field(default_factory=dict)
    resend: set[str] = field(default_factory=set)  # send even if unchanged
    nonce: str = ""
    sent_version: str = ""
    pending: dict[str, str] = field(default_factory=dict)  # nonce -> version
    first_answered: bool = False

    @property
    def wanted(self) -> bool:
        return self.subscribed and (self.wildcard or bool(self.names))

    @property
    def has_nothing(self) -> bool:
        """The client holds none of the covered resources (a fresh subscription)."""
        return self.base is None and not self.overlay

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def known(self, name: str) -> str | None:
        """The version of ``name`` the client has (None: it has none)."""
        if name in self.overlay:
            return self.overlay[name]
        if self.base is not None and self.covers(name):
            return self.base.resource_version(name)
        return None

    def materialise(self) -> None:
        """Turn `base` into explicit overlay entries, before coverage changes."""
        if self.base is None:
            return
        for name in self.base.chunks:
            if name not in self.overlay and self.covers(name):
                self.overlay[name] = self.base.resource_version(name)
        self.base = None


# Subscription steps remembered per server (see union).
UNION_STEPS = 256


def new_unions() -> WeakIdentityMemo[frozenset[str]]:
    """The memo of :func:`union`, one per server. Weakly held: a union is
    remembered while streams hold its sets, no longer."""
    return WeakIdentityMemo(UNION_STEPS)


def union(
    have: frozenset[str], added: frozenset[str], memo: WeakIdentityMemo[frozenset[str]]
) -> frozenset[str]:
    """``have | added``, one object for every stream that makes the same
    step (2,000 sidecars subscribing the same 3,000 endpoint names hold one
    set, not 2,000)."""
    if not have:
        return added
    found = memo.get(have, added)
    if found is not None:
        return found
    return memo.put((have, added), intern_names(have | added))


class DeltaStream(StreamCore[_DeltaType, DeltaRequest]):
    """One delta ADS stream. Same shape as the state-of-the-world stream, so
    the same life drives both (lifecycle.py, :meth:`StreamCore.run`)."""

    def __init__(
        self, ctx: StreamContext, context: Context, node_id: str, status: StreamStatus
    ) -> None:
        super().__init__(ctx, context, node_id, status, _DeltaType)
        self.vhds = VhdsState(ctx.vhds)

    def served(self, type_url: str, snapshot: Snapshot) -> TypeResources:
        return self.vhds.served(type_url, snapshot)

    # -- requests ----------------------------------------------------------

    def parse(self, raw: bytes) -> DeltaRequest:
        return parse_delta_request(raw, self.ctx.limits.names)

    async def on_request(self, received: DeltaRequest, snapshot: Snapshot) -> None:
        request = received.message
        type_url = request.type_url
        if type_url not in SHORT_NAMES:
            log.debug("%s: ignoring delta request for unsupported type %s", self.node_id, type_url)
            return
        st = self.state(type_url)
        if request.response_nonce:
            self._answer(type_url, st, request)
        first = not st.subscribed
        subscribe = received.subscribe
        initial = dict(request.initial_resource_versions) if first else {}
        if type_url == VIRTUAL_HOST:
            self.vhds.asked = True
        if first:
            st.subscribed = True
            st.overlay.update(initial)
            if "*" in subscribe or (not subscribe and type_url in WILDCARD_TYPES):
                st.wildcard = True
            elif type_url == VIRTUAL_HOST:
                st.wildcard = True  # all of the stream's route configs' (server/vhds.py)
        if "*" in subscribe and not st.wildcard:
            st.materialise()
            st.wildcard = True
        added = subscribe - {"*"} if "*" in subscribe else subscribe
        if st.names:
            added = intern_names(added - st.names)
        if added:
            if st.base is not None:
                for name in added:
                    if not st.covers(name) and name not in initial:
                        st.overlay[name] = None  # newly wanted: the client has nothing yet
            st.names = union(st.names, added, self.ctx.unions)
        unsubscribe = set(request.resource_names_unsubscribe)
        if "*" in unsubscribe and st.wildcard:
            st.materialise()
            st.wildcard = False
            for other in [n for n in st.overlay if n not in st.names]:
                del st.overlay[other]
        dropped = unsubscribe & st.names  # names never subscribed are ignored
        if dropped:
            st.names = st.names - dropped
            for name in dropped:
                st.overlay.pop(name, None)  # the client forgets it (unless wildcard keeps it)
        limit = self.ctx.limits.names
        if len(st.names) > limit or len(st.overlay) > limit:
            size = max(len(st.names), len(st.overlay))
            raise LimitExceeded(f"a subscription of {size:,} names; at most {limit:,}")
        if st.wanted or first:
            await self.send(type_url, snapshot, always=first)
        await self._finish_removals(snapshot)
        await self._send_followers(snapshot)

    def _answer(
        self, type_url: str, st: _DeltaType, request: discovery_pb2.DeltaDiscoveryRequest
    ) -> None:
        nonce = request.response_nonce
        version = st.pending.pop(nonce, None)
        if version is None:
            return  # not a response of this stream (a nonce from before a reconnect)
        self.outstanding.answered(nonce)
        status = self.status.of(type_url)
        if request.HasField("error_detail"):
            message = request.error_detail.message
            status.error = message
            status.nacked = version
            self.ctx.observer.on_nack(self.node_id, type_url, version, message)
            if type_url == ROUTE and not self.vhds.asked:
                self._drop_unasked_vhosts()
        elif nonce == st.nonce:
            status.acked = version
            status.error = None
            status.nacked = None
            self.ctx.observer.on_ack(self.node_id, type_url, version)

    # -- responses ---------------------------------------------------------

    async def push(self, snapshot: Snapshot) -> None:
        for type_url in PUSH_ORDER:
            st = self.types.get(type_url)
            if st is not None and st.wanted:
                await self.send(type_url, snapshot)
        await self._finish_removals(snapshot)
        await self._send_followers(snapshot)

    async def _finish_removals(self, snapshot: Snapshot) -> None:
        for type_url in _REFERENCED_TYPES:
            st = self.types.get(type_url)
            if st is None or "+keep." not in st.sent_version:
                continue
            if self._referrers_synced(snapshot):
                await self.send(type_url, snapshot)

    async def _send_followers(self, snapshot: Snapshot) -> None:
        st = self.types.get(ENDPOINT)
        if st is not None and st.resend and st.wanted:
            await self.send(ENDPOINT, snapshot)

    def _changes(self, st: _DeltaType, resources: TypeResources) -> tuple[list[str], list[str]]:
        """(names to send, names to remove) to bring the client to ``resources``."""
        if st.has_nothing:  # send everything
            return resources.delta_all(None if st.wildcard else st.names)[0], []
        chunks = resources.chunks
        if st.base is None:
            if st.wildcard:
                candidates: Iterable[str] = chunks.keys() | st.overlay.keys()
            else:
                candidates = st.names | st.overlay.keys()
        else:
            candidates = self.ctx.diffs.changed(st.base, resources) | st.overlay.keys() | st.resend
        send, remove = [], []
        for name in candidates:
            have = st.known(name)
            if name in chunks:
                if st.covers(name) and (
                    name in st.resend or have != resources.resource_version(name)
                ):
                    send.append(name)
            elif have is not None:
                remove.append(name)
        return sorted(send), sorted(remove)

    def _drop_unasked_vhosts(self) -> None:
        """A route response was rejected before the client ever asked for
        virtual hosts: those sent behind it may have found no VHDS watch,
        and such a response is never answered (server/vhds.py). Not waited
        for; the client is taken to have none of them."""
        st = self.types.pop(VIRTUAL_HOST, None)
        if st is not None:
            for nonce in st.pending:
                self.outstanding.answered(nonce)
        self.vhds.forget()

    async def send(self, type_url: str, snapshot: Snapshot, always: bool = False) -> None:
        await self._send_type(type_url, snapshot, always)
        if type_url == ROUTE and self.vhds.routes_sent(self.types.get(ROUTE), snapshot):
            st = self.state(VIRTUAL_HOST)
            if not st.subscribed:
                if asking(self.inbox):
                    return  # the client's own first request follows (server/vhds.py)
                st.subscribed = st.wildcard = True
            await self._send_type(VIRTUAL_HOST, snapshot)

    async def _send_type(self, type_url: str, snapshot: Snapshot, always: bool = False) -> None:
        if self.withholding(type_url, snapshot):
            return
        st = self.state(type_url)
        resources = self.served(type_url, snapshot)
        if (
            st.base is resources
            and not (always or st.overlay or st.resend)
            and st.sent_version == resources.version
        ):
            return  # the client has this very generation: nothing to send or remove
        send, remove = self._changes(st, resources)
        if type_url == VIRTUAL_HOST:
            remove = self.vhds.within(remove)  # the others went with their route config
        held: dict[str, str | None] = {}
        if remove and type_url in _REFERENCED_TYPES and not self._referrers_synced(snapshot):
            held = {name: st.known(name) for name in remove}  # make before break
            remove = []
        version = resources.version
        if held:
            digest = hashlib.sha256("\0".join(sorted(held)).encode()).hexdigest()[:8]
            version = f"{version}+keep.{digest}"
        if not (send or remove or always or version != st.sent_version):
            return
        everything = st.has_nothing
        # Clusters the client had at another version (their endpoints follow);
        # none when it has nothing (a cold start: no per-name look-ups).
        updated = (
            [name for name in send if st.known(name) is not None]
            if type_url == CLUSTER and not everything
            else []
        )
        header = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=type_url, removed_resources=remove
        ).SerializeToString()
        nonce = str(next(self._nonces))
        if everything:
            body = resources.delta_all(None if st.wildcard else st.names)[1]
            size = sum(map(len, body))
        else:
            size = sum(len(resources.chunks[n]) for n in send)
        unanswered = self.outstanding.unanswered
        if unanswered >= self.ctx.limits.unanswered:
            raise LimitExceeded(f"{unanswered} responses unanswered")
        await self.outstanding.before_send(size)
        if not everything:
            body = [resources.delta_chunk(n) for n in send]
        message = b"".join([header, *body, encode_nonce(nonce)])
        await self.ctx.write(self.context, message)
        self.outstanding.sent(nonce)
        st.base, st.overlay, st.resend = resources, held, set()
        st.nonce, st.sent_version = nonce, version
        st.pending[nonce] = version
        self.status.of(type_url).sent = version
        if type_url == CLUSTER and updated:
            follower = self.types.get(ENDPOINT)
            if follower is not None:
                # EDS names are the cluster names (sailplane's clusters set
                # service_name = name); a changed cluster re-warms on them.
                follower.resend |= {n for n in updated if follower.covers(n)}
        self.ctx.observer.on_push(self.node_id, type_url, version, len(message))


__all__ = ["DeltaStream", "new_unions", "union"]
