"""What one client may cost the control plane: streams per node and per peer
host, names per subscription, requests read ahead, responses left unanswered.

Why these bounds: anyone who can reach the plaintext xDS port can claim a
node id (they are not secret), and every stream holds what its client sent
(subscribed names, queued requests) for as long as it is open. Without a
bound, one client turns 15 MB requests into gigabytes of Python sets, or
opens thousands of streams. Each bound is generous for a real Envoy (which
opens one ADS stream per node and subscribes to the clusters of its mesh)
and is configurable on :class:`~sailplane.xds.server.AdsServer`.

A client over a bound gets ``RESOURCE_EXHAUSTED`` with a message that says
which; the refusal is logged once per node id or host while it keeps
trying, and everyone else is served as before.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("sailplane.xds")


@dataclass(frozen=True, slots=True)
class StreamLimits:
    # Concurrent streams that claim one node id from one peer host. Envoy
    # opens one ADS stream per node; a reconnect overlaps the old stream for
    # a moment. Counted per host too: node ids are not secret, and streams
    # from elsewhere that claim a node must not lock the real proxy out.
    per_node: int = 8
    # Concurrent streams from one peer host (the address without its port),
    # counted before anything is read. Real proxies have a host each (or a
    # handful per host); the benchmark harness raises this for its 2,000
    # simulated proxies on loopback.
    per_host: int = 1024
    # Resource names in one type's subscription (a state-of-the-world
    # request; a delta stream's subscription and initial versions). A
    # 6,000-cluster mesh subscribes 6,000 EDS names; each name costs ~100
    # bytes as a Python string in a set.
    names: int = 100_000
    # Request bytes read ahead of the stream's own handling of them; past
    # this the stream stops reading, and HTTP/2 flow control holds the client.
    inbox_bytes: int = 4 * 1024 * 1024
    # Delta responses a stream may leave unanswered (Envoy answers each).
    unanswered: int = 256
    # A node id longer than this is refused before it is counted or logged;
    # a node (its metadata: Istio's is a few KiB) larger than this, before
    # the hooks see it.
    node_id_length: int = 1024
    node_bytes: int = 1024 * 1024


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5432`` -> ``10.0.0.1``; ``ipv6:[::1]:5432`` -> ``::1``;
    anything else (``unix:...``) as it is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")] if "]" in rest else rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


class StreamCounts:
    """Open streams per node id and per peer host. Keys are dropped when
    their count reaches zero, so this holds only what is open."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self._hosts: Counter[str] = Counter()
        self._nodes: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()
        self.refused = 0  # streams refused for a limit (for /metrics and tests)

    def open_host(self, host: str) -> str | None:
        """Count a stream from ``host``; a refusal message if it is one too many."""
        return self._open(self._hosts, "host", host, self.limits.per_host)

    def close_host(self, host: str) -> None:
        self._close(self._hosts, "host", host)

    def open_node(self, node_id: str, host: str) -> str | None:
        """Count a stream claiming ``node_id`` from ``host``."""
        label = f"node {node_id!r} from host {host!r}"
        return self._open(
            self._nodes, "node", _node_key(node_id, host), self.limits.per_node, label
        )

    def close_node(self, node_id: str, host: str) -> None:
        self._close(self._nodes, "node", _node_key(node_id, host))

    def streams_of_node(self, node_id: str) -> int:
        """From every host."""
        prefix = _node_key(node_id, "")
        return sum(n for key, n in self._nodes.items() if key.startswith(prefix))

    def streams_of_host(self, host: str) -> int:
        return self._hosts[host]

    def _open(
        self, counts: Counter[str], what: str, key: str, limit: int, label: str = ""
    ) -> str | None:
        if counts[key] < limit:
            counts[key] += 1
            return None
        self.refused += 1
        message = f"too many xDS streams for {label or f'{what} {key!r}'}: at most {limit} at once"
        if (what, key) not in self._logged:
            self._logged.add((what, key))
            log.warning("%s (refusing more while it has %d open)", message, counts[key])
        return message

    def _close(self, counts: Counter[str], what: str, key: str) -> None:
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]
            self._logged.discard((what, key))


def _node_key(node_id: str, host: str) -> str:
    return f"{node_id}\0{host}"


__all__ = ["StreamCounts", "StreamLimits", "peer_host"]
