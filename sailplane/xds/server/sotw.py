"""State-of-the-world ADS streams (``StreamAggregatedResources``).

Protocol rules implemented here (envoyproxy.io, "xDS REST and gRPC protocol"):

* The node is taken from the first request of a stream; later requests may
  omit it (``set_node_on_first_message_only``).
* Each type URL has its own version and nonce. A request whose
  ``response_nonce`` is not the last nonce sent for that type is stale and is
  ignored whole: a newer response is already on its way and the client will
  answer that one. Before this stream has sent a type anything, no nonce is
  stale (a client resuming after a reconnect may still carry its old one).
* A request answering the last nonce is an ACK, or a NACK if it carries
  ``error_detail``. A NACK leaves the client on its last accepted version; we
  record the error and do not resend the same version.
* Clusters and listeners are wildcard types (an empty first subscription, or
  ``*``, means everything); other types are subscribed by name. A named
  resource that does not exist is answered as soon as it appears. An empty
  list of names on a type that is not wildcard unsubscribes: nothing more is
  sent for it, and it no longer holds back removals.
* Make before break: a push sends secrets, clusters, endpoints, listeners,
  routes in that order. A cluster (and its endpoints) that disappears is kept
  in the responses until the listeners and routes that might point at it
  have been ACKed at their new versions; only then is it removed.
* After a cluster response, endpoints are re-sent: Envoy re-warms changed
  clusters and waits for an EDS response before using them. Likewise routes
  after listeners. Except after a response that only adds EDS clusters with
  assignments not yet subscribed: Envoy's new subscription asks for them.
  Listeners and routes then wait for that request (at most ``route_hold``
  seconds), so the new clusters' endpoints go first: the cluster is warm
  before the routes that name it arrive, and the client does not parse a
  whole route table (367 KB at 1,000 services) between its request for the
  endpoints and their answer.

Responses are assembled from pre-encoded bytes (see encoding.py), so the
gRPC response serialiser is the identity function.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sailplane.memo import WeakKeyIdentityMemo
from sailplane.xds.encoding import encode_nonce
from sailplane.xds.resources import TypeResources
from sailplane.xds.server.context import Context, StreamContext
from sailplane.xds.server.requests import SotwRequest, intern_names, parse_sotw_request
from sailplane.xds.server.status import StreamStatus
from sailplane.xds.server.stream import StreamCore
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SHORT_NAMES,
    WILDCARD_TYPES,
)

log = logging.getLogger("sailplane.xds")

# Removals of these types wait until listeners and routes no longer refer to them.
_REFERENCED_TYPES = (CLUSTER, ENDPOINT)
# After a response of the key type, re-send the value type (Envoy re-warms).
_RESEND_AFTER = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
# A cluster response adding more clusters than this re-sends endpoints
# without looking at each one's assignment name.
_ADDITIONS_CHECKED = 64
# What waits for new clusters' endpoints, and at most how long (seconds).
_HELD_TYPES = (LISTENER, ROUTE)
DEFAULT_ROUTE_HOLD = 1.0
# Partial responses remembered: a push needs one per (type, subscription)
# that streams share, a few dozen at once.
_PARTIALS = 256


@dataclass(slots=True)
class _TypeState:
    """One type's subscription and what the client has (or is being sent)."""

    subscribed: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""
    sent_version: str = ""
    # What the last response brought the client to, and what it last
    # accepted: a shared TypeResources (restricted to the subscription) plus
    # resources kept for make before break. Shared objects, never copied.
    sent: TypeResources | None = None
    sent_kept: Mapping[str, bytes] = field(default_factory=dict)
    accepted: TypeResources | None = None
    accepted_kept: Mapping[str, bytes] = field(default_factory=dict)
    # The subscription `sent` was made for; a partial response is relative to
    # it, so it must not have changed since.
    sent_names: frozenset[str] | None = None
    resend: bool = False
    # The size of the client's last request of this type: what its answer
    # to the next response will be, since a SotW request repeats the whole
    # subscription (an EDS ACK of 3,000 clusters is 150 KB).
    answer_size: int = 0

    @property
    def wanted(self) -> bool:
        """Subscribed to something (an empty named subscription is none)."""
        return self.subscribed and (self.wildcard or bool(self.names))


class SotwStream(StreamCore[_TypeState, SotwRequest]):
    """One state-of-the-world ADS stream: subscriptions, nonces, ACK/NACK.
    All state is touched only by the stream's own task."""

    def __init__(
        self, ctx: StreamContext, context: Context, node_id: str, status: StreamStatus
    ) -> None:
        super().__init__(ctx, context, node_id, status, _TypeState)
        # Assignments of new clusters the client has not asked for yet, and
        # until when listeners and routes wait for that request.
        self._awaited: frozenset[str] = frozenset()
        self._hold_until: float | None = None

    # -- requests ----------------------------------------------------------

    def parse(self, raw: bytes) -> SotwRequest:
        return parse_sotw_request(raw, self.ctx.limits.names)

    async def on_request(self, received: SotwRequest, snapshot: Snapshot) -> None:
        request = received.message
        type_url = request.type_url
        if type_url not in SHORT_NAMES:
            log.debug("%s: ignoring request for unsupported type %s", self.node_id, type_url)
            return
        st = self.state(type_url)
        status = self.status.of(type_url)
        if request.response_nonce and st.nonce:
            if request.response_nonce != st.nonce:
                if request.HasField("error_detail") and st.sent_names is not None:
                    # A NACK of an older response that a partial one built on:
                    # the client may lack what that one carried. Start over.
                    st.sent_names = None
                    if st.wanted:
                        await self.send(type_url, snapshot)
                return  # stale: the client has not seen our latest response yet
            self.outstanding.answered(type_url)
            if request.HasField("error_detail"):
                message = request.error_detail.message
                status.error = message
                status.nacked = st.sent_version
                # The client stays on its last good config.
                st.sent, st.sent_kept = st.accepted, st.accepted_kept
                st.sent_names = None  # the next response is a complete one
                self.ctx.observer.on_nack(self.node_id, type_url, st.sent_version, message)
            else:
                status.acked = st.sent_version
                status.error = None
                status.nacked = None
                st.accepted, st.accepted_kept = st.sent, st.sent_kept
                self.ctx.observer.on_ack(self.node_id, type_url, st.sent_version)
        requested = received.names
        wildcard = "*" in requested or (
            type_url in WILDCARD_TYPES and not requested and (not st.subscribed or st.wildcard)
        )
        names = intern_names(requested - {"*"}) if "*" in requested else requested
        # (sets compare element by element even when they are the same object)
        changed = (
            not st.subscribed
            or wildcard != st.wildcard
            or (names is not st.names and names != st.names)
        )
        st.subscribed, st.wildcard, st.names = True, wildcard, names
        st.answer_size = received.size
        target = self._target(type_url, snapshot)
        # A NACKed version is not sent again; the next change will be.
        moved = target[0] != st.sent_version and status.nacked != target[0]
        if moved and self._holds(type_url):
            moved = False  # sent once the new clusters' endpoints are asked for
        if (changed or st.resend or moved) and st.wanted:
            await self.send(type_url, snapshot, target)
        if type_url == ENDPOINT and self._awaited:
            self._awaited = frozenset() if wildcard else self._awaited - names
            if not self._awaited:
                await self._release(snapshot, "asked")
        await self._finish_removals(snapshot)
        await self._send_followers(snapshot)

    # -- responses ---------------------------------------------------------

    async def push(self, snapshot: Snapshot) -> None:
        """The snapshot changed: send every subscribed type whose content moved."""
        for type_url in PUSH_ORDER:
            st = self.types.get(type_url)
            if st is None or not st.wanted or self._holds(type_url):
                continue
            resources = snapshot.get(type_url)
            if (
                st.sent is resources
                and st.accepted is resources
                and not (st.resend or st.sent_kept or st.accepted_kept)
            ):
                continue  # sent and accepted whole: nothing kept, nothing moved
            target = self._target(type_url, snapshot)
            if st.resend or st.sent_version != target[0]:
                await self.send(type_url, snapshot, target)
        await self._finish_removals(snapshot)
        await self._send_followers(snapshot)

    def _holds(self, type_url: str) -> bool:
        return self._hold_until is not None and type_url in _HELD_TYPES

    def held_until(self) -> float | None:
        return self._hold_until

    async def release_held(self, snapshot: Snapshot) -> None:
        await self._release(snapshot, "expired")

    async def _release(self, snapshot: Snapshot, outcome: str) -> None:
        """The client asked for the new clusters' endpoints, or the hold's
        time is up: send the listeners and routes that waited."""
        self._awaited, self._hold_until = frozenset(), None
        self.ctx.observer.on_hold(self.node_id, outcome)
        await self.push(snapshot)

    def _await_assignments(self, awaited: frozenset[str]) -> None:
        """Hold listeners and routes until the client asks for ``awaited``."""
        if not awaited:
            return
        self._awaited |= awaited
        if self._hold_until is None:  # a later addition does not extend it
            self._hold_until = time.monotonic() + self.ctx.route_hold

    def _kept(
        self, type_url: str, resources: TypeResources, snapshot: Snapshot
    ) -> dict[str, bytes]:
        """Resources the client has that the snapshot dropped, but that must stay
        until nothing refers to them (make before break)."""
        if type_url not in _REFERENCED_TYPES or self._referrers_synced(snapshot):
            return {}
        st = self.state(type_url)
        kept: dict[str, bytes] = {}
        for have, extra in ((st.accepted, st.accepted_kept), (st.sent, st.sent_kept)):
            if have is not None:
                kept.update((n, have.chunks[n]) for n in self.ctx.diffs.removed(have, resources))
            kept.update((n, c) for n, c in extra.items() if n not in resources.chunks)
        if not st.wildcard:
            kept = {n: c for n, c in kept.items() if n in st.names}
        return kept

    def _target(self, type_url: str, snapshot: Snapshot) -> tuple[str, dict[str, bytes]]:
        """The version the client is to be brought to, and what is kept
        for make before break (part of that version)."""
        resources = snapshot.get(type_url)
        kept = self._kept(type_url, resources, snapshot)
        if not kept:
            return resources.version, kept
        digest = hashlib.sha256("\0".join(sorted(kept)).encode()).hexdigest()[:8]
        return f"{resources.version}+keep.{digest}", kept

    async def _finish_removals(self, snapshot: Snapshot) -> None:
        for type_url in _REFERENCED_TYPES:
            st = self.types.get(type_url)
            if st is None or not st.wanted or "+keep." not in st.sent_version:
                continue
            if self._referrers_synced(snapshot):
                await self.send(type_url, snapshot)

    async def _send_followers(self, snapshot: Snapshot) -> None:
        """Endpoints after a cluster response, routes after a listener response,
        whatever sent it (a request, a finished removal), not at some later push."""
        for type_url in _RESEND_AFTER.values():
            st = self.types.get(type_url)
            if st is not None and st.resend and st.wanted:
                await self.send(type_url, snapshot)

    def _partial_parts(
        self, st: _TypeState, type_url: str, resources: TypeResources
    ) -> tuple[bytes, ...] | None:
        """The response (without its nonce) when only changes need to be
        sent, as shared pieces: for types other than clusters and listeners,
        a state-of-the-world response may hold just the resources that
        changed (xDS protocol, "Grouping resources into responses"), which
        makes an endpoint change cost its own bytes, not the mesh's; after a
        subscription grew, the names it gained too (a new cluster's
        assignment, not every one again). None: send the whole subscription.

        Streams that go from the same shared object to the next with the same
        (interned) subscription get the same response: it is worked out once
        per server, not once per stream (2,000 sidecars, one endpoint change)."""
        if (
            type_url in WILDCARD_TYPES
            or st.wildcard
            or st.resend
            or st.sent is None
            or st.sent_kept
            or st.sent_names is None
        ):
            return None
        names, sent = st.names, st.sent
        # Layered resources are one proxy's own: nothing to share.
        shared = st.sent_names is names and len(resources.parts()) == 1
        if shared:
            found = self.ctx.partials.get(sent, resources, names)
            if found is not None:
                return found
        changed = self.ctx.diffs.changed(sent, resources)
        chunks = resources.chunks
        if len(changed) > len(names):
            out = {n for n in names if n in changed and n in chunks}
        else:
            out = {n for n in changed if n in names and n in chunks}
        if st.sent_names is not names and st.sent_names != names:
            # The client holds st.sent for every name it had; a name it
            # gained it holds nothing for.
            out.update(n for n in names - st.sent_names if n in chunks)
        parts = tuple(resources.body_parts(out))
        if shared:
            self.ctx.partials.put((sent, resources, names), parts)
        return parts

    def _new_assignments(
        self, type_url: str, st: _TypeState, resources: TypeResources, kept: Mapping[str, bytes]
    ) -> frozenset[str] | None:
        """None if this response must be followed by its follower type
        (clusters: endpoints; listeners: routes). Not when a cluster response
        only adds EDS clusters whose assignments the client has not
        subscribed to: Envoy asks for those itself, and re-sending every
        assignment it has would put a full EDS parse before that request
        (issue 20's add); then the assignments it will ask for. Anything
        else keeps the rule: a changed or removed cluster, a first response,
        make before break in progress, a new cluster whose assignment is
        subscribed already."""
        before = st.sent
        if type_url != CLUSTER or before is None or kept or st.sent_kept:
            return None
        changed = self.ctx.diffs.changed(before, resources)
        if not changed or len(changed) > _ADDITIONS_CHECKED:
            return None
        if any(name in before.chunks for name in changed):
            return None  # changed or removed, not only added
        endpoints = self.types.get(ENDPOINT)
        if endpoints is None or endpoints.wildcard:
            return None
        # (None: not an EDS cluster, nothing to ask for)
        assignments = frozenset(
            a for name in changed if (a := resources.eds_name(name)) is not None
        )
        # A new cluster whose assignment is subscribed already: Envoy's
        # subscription does not move, so it would not ask.
        return assignments if assignments.isdisjoint(endpoints.names) else None

    async def send(
        self, type_url: str, snapshot: Snapshot, target: tuple[str, dict[str, bytes]] | None = None
    ) -> None:
        """Send ``type_url``'s response; ``target`` is :meth:`_target`'s
        answer when the caller has just worked it out for this snapshot."""
        if self.withholding(type_url, snapshot):
            return
        st = self.state(type_url)
        resources = snapshot.get(type_url)
        version, kept = target if target is not None else self._target(type_url, snapshot)
        nonce = str(next(self._nonces))
        partial = None if kept else self._partial_parts(st, type_url, resources)
        parts: Sequence[bytes]
        if kept:
            available = resources.chunks.keys()
            selected = available if st.wildcard else st.names & available
            parts = [
                resources.header(version),
                *[resources.chunks[n] for n in sorted(selected)],
                *[kept[n] for n in sorted(kept)],
            ]
        elif partial is not None:
            parts = partial
        else:
            parts = resources.body_parts(None if st.wildcard else st.names)
        # The slot first, the bytes after: a stream queued for a slot must
        # not hold a megabyte of response while it waits.
        await self.outstanding.before_send(sum(map(len, parts)), st.answer_size)
        # One allocation, nonce included: each extra copy of a 1 MB body held
        # by every stream at cold start is another gigabyte.
        message = b"".join([*parts, encode_nonce(nonce)])
        del parts
        added = self._new_assignments(type_url, st, resources, kept)
        await self.ctx.write(self.context, message)
        self.outstanding.sent(type_url)
        st.nonce = nonce
        st.sent_version = version
        st.sent, st.sent_kept, st.sent_names = resources, kept, st.names
        st.resend = False
        status = self.status.of(type_url)
        status.sent = version
        # LDS and CDS names asked for and not sent: MISSING. (gRPC names its
        # targets; Envoy asks for all. EDS and RDS names follow what was sent.)
        named = type_url in (LISTENER, CLUSTER) and not st.wildcard
        missing = st.names.difference(resources.chunks, kept) if named else ()
        status.missing = tuple(sorted(missing))
        if added is not None:
            self._await_assignments(added)
        follower = _RESEND_AFTER.get(type_url)
        if (
            added is None
            and follower is not None
            and follower in self.types
            and self.types[follower].subscribed
        ):
            self.types[follower].resend = True
        self.ctx.observer.on_push(self.node_id, type_url, version, len(message))


def new_partials() -> WeakKeyIdentityMemo[tuple[bytes, ...]]:
    """The memo of partial responses, one per server. Keyed weakly by what
    they were made from, which one configuration's streams share, so an
    entry goes with its generation; the pieces it holds are shared bytes."""
    return WeakKeyIdentityMemo(_PARTIALS)


__all__ = ["SotwStream", "new_partials"]
