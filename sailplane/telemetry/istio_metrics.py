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

from sailplane.telemetry.attributes import HTTP_LABELS, TCP_LABELS

DURATION_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)

Labels = tuple[str, ...]


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


_HISTOGRAMS = (
    (
        "istio_request_duration_milliseconds",
        "Duration of requests, from the first request byte to the last response byte.",
        DURATION_BUCKETS,
    ),
    ("istio_request_bytes", "Size of requests: headers and body.", BYTES_BUCKETS),
    ("istio_response_bytes", "Size of responses: headers and body.", BYTES_BUCKETS),
)
_TCP_COUNTERS = (
    ("istio_tcp_sent_bytes", "Bytes sent to the downstream during TCP connections."),
    ("istio_tcp_received_bytes", "Bytes received from the downstream during TCP connections."),
    ("istio_tcp_connections_opened", "TCP connections opened."),
    ("istio_tcp_connections_closed", "TCP connections closed."),
)


class IstioMetrics(Collector):
    """The mesh's request and connection metrics; a prometheus-client collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[Labels, float] = {}
        self._histograms: dict[Labels, tuple[_Histogram, _Histogram, _Histogram]] = {}
        self._tcp: dict[Labels, list[float]] = {}  # sent, received, opened, closed
        self._registry = CollectorRegistry()
        self._registry.register(self)

    def request(
        self, labels: Labels, duration_ms: float, request_bytes: int, response_bytes: int
    ) -> None:
        with self._lock:
            self._requests[labels] = self._requests.get(labels, 0.0) + 1
            found = self._histograms.get(labels)
            if found is None:
                found = (
                    _Histogram(DURATION_BUCKETS),
                    _Histogram(BYTES_BUCKETS),
                    _Histogram(BYTES_BUCKETS),
                )
                self._histograms[labels] = found
            duration, sent, received = found
            duration.observe(duration_ms)
            sent.observe(request_bytes)
            received.observe(response_bytes)

    def tcp(
        self, labels: Labels, sent: int = 0, received: int = 0, opened: int = 0, closed: int = 0
    ) -> None:
        with self._lock:
            values = self._tcp.setdefault(labels, [0.0, 0.0, 0.0, 0.0])
            values[0] += sent
            values[1] += received
            values[2] += opened
            values[3] += closed

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            requests = sorted(self._requests.items())
            histograms = sorted(
                (labels, [h.cumulative() for h in found], [h.total for h in found])
                for labels, found in self._histograms.items()
            )
            tcp = sorted((labels, list(values)) for labels, values in self._tcp.items())
        family = CounterMetricFamily(
            "istio_requests", "Requests, by Istio's standard labels.", labels=HTTP_LABELS
        )
        for labels, value in requests:
            family.add_metric(labels, value)
        yield family
        for i, (name, documentation, _) in enumerate(_HISTOGRAMS):
            histogram = HistogramMetricFamily(name, documentation, labels=HTTP_LABELS)
            for labels, buckets, sums in histograms:
                histogram.add_metric(labels, buckets[i], sums[i])
            yield histogram
        for i, (name, documentation) in enumerate(_TCP_COUNTERS):
            counter = CounterMetricFamily(name, documentation, labels=TCP_LABELS)
            for labels, values in tcp:
                counter.add_metric(labels, values[i])
            yield counter

    def render(self) -> bytes:
        """The text exposition of these metrics alone (``/stats/prometheus``)."""
        return generate_latest(self._registry)
