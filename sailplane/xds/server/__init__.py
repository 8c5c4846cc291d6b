"""The ADS server (go-control-plane's ``pkg/server``): it knows the protocol
(streams, nonces, ACK/NACK, make before break), the limits one client may
cost, and the hooks it calls; it reads snapshots through a
:class:`SnapshotSource` and knows nothing of how they are made.

Modules: core.py (:class:`AdsServer`), hooks.py (admission and observation),
context.py (what a stream gets), lifecycle.py (a stream from admission to
its end), stream.py (what both protocols share), sotw.py and delta.py (the
two protocols), requests.py (reading requests cheaply), push.py (the push
throttle), limits.py, status.py, memory.py.

May import the rest of ``sailplane.xds``, ``errors``, ``logs`` and ``memo``.
"""

from sailplane.xds.server.context import SnapshotSource, StreamContext
from sailplane.xds.server.core import ADS_SERVICE, AdsServer
from sailplane.xds.server.hooks import (
    AdmissionHooks,
    AdmitAll,
    ObservationHooks,
    Peer,
    StreamHooks,
    Unobserved,
)
from sailplane.xds.server.limits import StreamLimits
from sailplane.xds.server.push import PushThrottle
from sailplane.xds.server.status import StatusRegistry, StreamStatus, SyncState

__all__ = [
    "ADS_SERVICE",
    "AdmissionHooks",
    "AdmitAll",
    "AdsServer",
    "ObservationHooks",
    "Peer",
    "PushThrottle",
    "SnapshotSource",
    "StatusRegistry",
    "StreamContext",
    "StreamHooks",
    "StreamLimits",
    "StreamStatus",
    "SyncState",
    "Unobserved",
]
