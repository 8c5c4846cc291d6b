"""Istio's standard metrics, kept by sailplane and exposed for Prometheus.

=========================================  ==========================================
``istio_requests_total``                   requests, by Istio's labels (counter)
``istio_request_duration_milliseconds``    request duration (histogram)
``istio_request_bytes``                    request headers + body (histogram)
``istio_response_bytes``                   response headers + body (histogram)
``istio_tcp_sent_bytes_total``             bytes sent to the downstream (counter)
``istio_tcp_received_bytes_total``         bytes received from the downstream (counter)
``istio_tcp_connections_opened_total``     TCP connections opened (counter)
``istio_tcp_connections_closed_total``     TCP connections closed (counter)
=========================================  ==========================================

The values live here, not in the proxies, so they never go backwards while
sailplane runs: a proxy that restarts or disconnects stops adding to its
series, and its series stay (Prometheus counter semantics; ``rate()`` then
falls to zero). A restart of sailplane itself is a counter reset, which
``rate()`` and ``increase()`` handle. Buckets are Istio's defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

DURATION_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)

LabelPairs = tuple[tuple[str, str], ...]


def _le(bound: float) -> str:
    """Bucket bounds as Envoy writes them: ``0.5``, ``1``, ``3600000``."""
    return str(int(bound)) if bound == int(bound) else str(bound)


@dataclass(slots=True)
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        counts = self.counts or [0] * len(self.buckets)
        for bound, count in zip(self.buckets, counts, strict=True):
            running += count
            out.append((_le(bound), running))
        out.append(("+Inf", self.count))
        return out


# Per standard metric (model.telemetry.STANDARD_METRICS): the family name,
# its help, and for histograms the buckets; in the exposition's order.
COUNTERS = {
    "REQUEST_COUNT": ("istio_requests", "Requests, by Istio's standard labels."),
    "TCP_SENT_BYTES": (
        "istio_tcp_sent_bytes",
        "Bytes sent to the downstream during TCP connections.",
    ),
    "TCP_RECEIVED_BYTES": (
        "istio_tcp_received_bytes",
        "Bytes received from the downstream during TCP connections.",
    ),
    "TCP_OPENED_CONNECTIONS": ("istio_tcp_connections_opened", "TCP connections opened."),
    "TCP_CLOSED_CONNECTIONS": ("istio_tcp_connections_closed", "TCP connections closed."),
}
HISTOGRAMS = {
    "REQUEST_DURATION": (
        "istio_request_duration_milliseconds",
        "Duration of requests, from the first request byte to the last response byte.",
        DURATION_BUCKETS,
    ),
    "REQUEST_SIZE": ("istio_request_bytes", "Size of requests: headers and body.", BYTES_BUCKETS),
    "RESPONSE_SIZE": (
        "istio_response_bytes",
        "Size of responses: headers and body.",
        BYTES_BUCKETS,
    ),
}
_ORDER = (
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
)
# One value for one series: (standard metric, its labels, the amount or observation).
Point = tuple[str, LabelPairs, float]


class IstioMetrics(Collector):
    """The mesh's request and connection metrics; a prometheus-client collector.

    Series are keyed by their label pairs, not by a fixed label list: tag
    overrides (Telemetry ``tagOverrides``) give one workload's series labels
    another's do not have, as Istio's per-proxy stats do."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelPairs, float]] = {m: {} for m in COUNTERS}
        self._histograms: dict[str, dict[LabelPairs, _Histogram]] = {m: {} for m in HISTOGRAMS}
        self._registry = CollectorRegistry()
        self._registry.register(self)

    def record(self, points: Iterable[Point]) -> None:
        """Add to counters, observe histograms (a count of 0 still makes the series)."""
        with self._lock:
            for metric, labels, value in points:
                counter = self._counters.get(metric)
                if counter is not None:
                    counter[labels] = counter.get(labels, 0.0) + value
                    continue
                series = self._histograms[metric]
                found = series.get(labels)
                if found is None:
                    found = series[labels] = _Histogram(HISTOGRAMS[metric][2])
                found.observe(value)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counters = {m: sorted(v.items()) for m, v in self._counters.items()}
            histograms = {
                m: sorted((labels, h.cumulative(), h.total) for labels, h in v.items())
                for m, v in self._histograms.items()
            }
        for metric in _ORDER:
            if metric in COUNTERS:
                name, documentation = COUNTERS[metric]
                family: Metric = CounterMetricFamily(name, documentation)
                for labels, value in counters[metric]:
                    family.add_sample(f"{name}_total", dict(labels), value)
            else:
                name, documentation, _ = HISTOGRAMS[metric]
                family = HistogramMetricFamily(name, documentation)
                for labels, buckets, total in histograms[metric]:
                    tags = dict(labels)
                    for bound, count in buckets:
                        family.add_sample(f"{name}_bucket", {**tags, "le": bound}, count)
                    family.add_sample(f"{name}_count", tags, buckets[-1][1])
                    family.add_sample(f"{name}_sum", tags, total)
            yield family

    def render(self) -> bytes:
        """The text exposition of these metrics alone (``/stats/prometheus``)."""
        return generate_latest(self._registry)
