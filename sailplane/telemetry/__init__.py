"""Telemetry for free: Istio's standard metrics, access logs and traces, with
no instrumentation in the apps.

The proxies stream an access log entry per request (per connection, for
TCP) to sailplane over gRPC (:mod:`sailplane.telemetry.receiver`); each entry
is resolved against the registry into Istio's labels
(:mod:`sailplane.telemetry.attributes`), counted into Istio's metrics
(:mod:`sailplane.telemetry.istio_metrics`, served at ``/stats/prometheus`` and
``/metrics``) and, where the ``sailplane`` provider is on, written as a JSON
line (:mod:`sailplane.telemetry.accesslog`). What the proxies are configured
with is in :mod:`sailplane.translate.telemetry`.

May import the model, ``ca`` (to read a peer's certificate), ``errors``,
``logs`` and, of ``translate``, only ``translate.telemetry`` (the metadata
names both sides use).
"""

from sailplane.telemetry.accesslog import AccessLogWriter
from sailplane.telemetry.attributes import HTTP_LABELS, TCP_LABELS, Attributes
from sailplane.telemetry.index import MeshIndex
from sailplane.telemetry.istio_metrics import IstioMetrics
from sailplane.telemetry.receiver import ALS_SERVICE, AccessLogReceiver, StreamState

__all__ = [
    "ALS_SERVICE",
    "HTTP_LABELS",
    "TCP_LABELS",
    "AccessLogReceiver",
    "AccessLogWriter",
    "Attributes",
    "IstioMetrics",
    "MeshIndex",
    "StreamState",
]
