"""Control-plane metrics for ``GET /metrics``, with Istio's names where Istio
has one (so its dashboards carry over):

====================================  ========================================================
``pilot_xds_pushes{type}``            responses sent, by xDS type (cds, eds, ...)
``pilot_xds_push_time{type}``         config in the cache -> that type sent (s)
``pilot_proxy_convergence_time``      file change seen -> first push to a proxy (s)
``pilot_total_xds_rejects{type}``     NACKs, by type
``pilot_xds{version}``                connected ADS streams, by Envoy version
``pilot_xds_config_size_bytes``       response sizes, by type
``sailplane_config_events_total``     objects added/updated/deleted, by kind
``sailplane_config_errors_total``     distinct new configuration errors
``sailplane_config_reloads_total``    loads, by result (applied/unchanged/rejected)
``sailplane_config_objects``          objects of the last load, by kind and state
``sailplane_xds_route_holds_total``   SotW routes held for new clusters' endpoints, by outcome
====================================  ========================================================

Each :class:`Metrics` has its own registry (tests run several control planes
in one process). Istio exposes its counters without the ``_total`` suffix
(its OpenTelemetry exporter is set up WithoutCounterSuffixes); prometheus-
client appends it, so Istio-named counters are a small collector of ours and
:func:`render` restores their names in the HELP/TYPE lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from envoy.config.core.v3 import base_pb2
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sailplane.xds import AdmissionHooks, Peer
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Istio's short type names (pilot/pkg/xds/v3.GetMetricType).
ISTIO_TYPES = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    LISTENER: "lds",
    ROUTE: "rds",
    SECRET: "sds",
    VIRTUAL_HOST: "vhds",  # delta streams only (xds/vhds.py)
}

_FAST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 3, 5, 10, 20, 30)
_SIZE_BUCKETS = (1, 1_000, 10_000, 100_000, 1_000_000, 4_000_000, 10_000_000, 40_000_000)


class IstioCounter(Collector):
    """A labelled counter exposed under its exact name (no ``_total``)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        with self._lock:
            items = sorted(self._values.items())
        for label_values, value in items:
            metric.add_sample(self.name, dict(zip(self.labels, label_values, strict=True)), value)
        yield metric


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        self.istio_counters = (
            IstioCounter(
                "pilot_xds_pushes",
                "Pilot build and send errors for lds, rds, cds and eds.",
                ("type",),
            ),
            IstioCounter(
                "pilot_total_xds_rejects",
                "Total number of XDS responses from pilot rejected by proxy.",
                ("type",),
            ),
        )
        self.pushes, self.rejects = self.istio_counters
        for counter in self.istio_counters:
            r.register(counter)
        self.push_time = Histogram(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            ["type"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all "
            "required configuration.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.config_size = Histogram(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            ["type"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.connected = Gauge(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS.",
            ["version"],
            registry=r,
        )
        self.config_events = Counter(
            "sailplane_config_events",
            "Configuration objects added, updated or deleted, by kind.",
            ["kind", "event"],
            registry=r,
        )
        self.config_errors = Counter(
            "sailplane_config_errors",
            "Configuration errors found (each distinct error counted when it appears).",
            registry=r,
        )
        self.reloads = Counter(
            "sailplane_config_reloads",
            "Loads of the configuration directory, by result: applied, unchanged, "
            "or rejected (did not parse; the last good configuration stays).",
            ["result"],
            registry=r,
        )
        self.config_objects = Gauge(
            "sailplane_config_objects",
            "Objects of the last load, by kind and state (active, retained, rejected, ignored).",
            ["kind", "state"],
            registry=r,
        )
        self.route_holds = Counter(
            "sailplane_xds_route_holds",
            "State-of-the-world listeners and routes held back for new clusters' "
            "endpoints, by how the hold ended: asked (the proxy asked for them) or "
            "expired (it did not, in time; they went out anyway).",
            ["outcome"],
            registry=r,
        )
        self.last_applied = Gauge(
            "sailplane_config_last_applied_timestamp_seconds",
            "When the configuration in force was applied (Unix time).",
            registry=r,
        )
        # type -> its config_size and push_time histograms
        self._children: dict[str, tuple[Any, Any]] = {}
        # node id -> when its snapshot last changed, and the types pushed since.
        self._triggers: dict[str, tuple[float, set[str]]] = {}
        # node id -> when the config change that changed its snapshot was first seen.
        self._converging: dict[str, float] = {}

    # -- observations ------------------------------------------------------

    def snapshots_changed(self, node_ids: Iterable[str], change_seen_at: float | None) -> None:
        """A config apply changed these proxies' snapshots."""
        now = self.clock()
        for node_id in node_ids:
            self._triggers[node_id] = (now, set())
            if change_seen_at is not None:
                self._converging.setdefault(node_id, change_seen_at)

    def pushed(self, node_id: str, type_url: str, size: int) -> None:
        kind = ISTIO_TYPES.get(type_url, "unknown")
        self.pushes.inc(kind)
        children = self._children.get(kind)
        if children is None:  # labels() takes a lock and builds a key: once a type
            children = self._children[kind] = (
                self.config_size.labels(kind),
                self.push_time.labels(kind),
            )
        children[0].observe(size)
        now = self.clock()
        trigger = self._triggers.get(node_id)
        if trigger is not None and kind not in trigger[1]:
            trigger[1].add(kind)
            children[1].observe(max(0.0, now - trigger[0]))
        started = self._converging.pop(node_id, None)
        if started is not None:
            self.convergence.observe(max(0.0, now - started))

    def rejected(self, type_url: str) -> None:
        self.rejects.inc(ISTIO_TYPES.get(type_url, "unknown"))

    def connected_stream(self, node_id: str, version: str) -> None:
        self.connected.labels(version).inc()
        self._triggers[node_id] = (self.clock(), set())

    def disconnected_stream(self, node_id: str, version: str, last: bool) -> None:
        self.connected.labels(version).dec()
        if last:
            self._triggers.pop(node_id, None)
            self._converging.pop(node_id, None)

    def count_objects(self, counts: Mapping[tuple[str, str], int]) -> None:
        self.config_objects.clear()
        for (kind, state), count in counts.items():
            self.config_objects.labels(kind, state).set(count)

    def render(self) -> bytes:
        text = generate_latest(self.registry).decode()
        for counter in self.istio_counters:
            name = counter.name
            text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ", 1)
            text = text.replace(f"# TYPE {name}_total counter", f"# TYPE {name} counter", 1)
        return text.encode()


def envoy_version(node: base_pb2.Node) -> str:
    """``1.40.0`` from the node's build version; ``unknown`` if it sent none."""
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        return f"{v.major_number}.{v.minor_number}.{v.patch}"
    return "unknown"


class AdmissionWithNacks(AdmissionHooks, Protocol):
    """The Controller, as the hooks see it: it admits streams and hears NACKs."""

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None: ...


class InstrumentedHooks:
    """The control plane's stream hooks (a :class:`~sailplane.xds.StreamHooks`).
    Admission is the Controller's (``inner``), with every admitted stream
    counted by Envoy version; observation is metrics for every push, ACK and
    NACK, NACKs also passed on to the Controller (it logs and keeps them)."""

    def __init__(
        self,
        inner: AdmissionWithNacks,
        metrics: Metrics,
        on_activity: Callable[[], None] = lambda: None,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        self.on_activity = on_activity
        self._versions: dict[str, list[str]] = {}

    async def on_connect(self, node: base_pb2.Node, peer: Peer) -> str:
        node_id = await self.inner.on_connect(node, peer)
        self.on_activity()
        version = envoy_version(node)
        self._versions.setdefault(node_id, []).append(version)
        self.metrics.connected_stream(node_id, version)
        return node_id

    def on_disconnect(self, node_id: str, stream_id: int) -> None:
        self.inner.on_disconnect(node_id, stream_id)
        versions = self._versions.get(node_id) or ["unknown"]
        version = versions.pop(0)
        last = not versions
        if last:
            self._versions.pop(node_id, None)
        self.metrics.disconnected_stream(node_id, version, last)

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        self.inner.on_nack(node_id, type_url, version, message)
        self.metrics.rejected(type_url)

    def on_push(self, node_id: str, type_url: str, version: str, size: int) -> None:
        self.on_activity()
        self.metrics.pushed(node_id, type_url, size)

    def on_hold(self, node_id: str, outcome: str) -> None:
        self.metrics.route_holds.labels(outcome).inc()

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        self.on_activity()
