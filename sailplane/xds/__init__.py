"""xDS serving, split as go-control-plane splits it: snapshots and the cache
here, the ADS server in :mod:`sailplane.xds.server`.

Nothing here knows Istio kinds; it moves Envoy resources to Envoy proxies.

* types.py: type URLs and the push order; wire.py, encoding.py: the bytes
  written by hand;
* resources.py: :class:`TypeResources`, one type's resources encoded once
  and shared; diff.py: what changed between two of them;
* snapshot.py: :class:`Snapshot`, what one proxy should have, with its
  consistency check; references.py: what resources refer to;
* cache.py: :class:`SnapshotCache`, node id -> snapshot, and watches;
* server/: the ADS server (state of the world and delta), its hooks, its
  limits and per-stream status;
* client.py, delta_client.py: small ADS clients (test doubles).

May import ``sailplane.errors``, ``logs`` and ``memo``; never the model,
``config`` or ``translate`` (tests/unit/test_architecture.py).
"""

from sailplane.xds.cache import SnapshotCache
from sailplane.xds.resources import TypeResources, merge_types
from sailplane.xds.server import (
    ADS_SERVICE,
    AdmissionHooks,
    AdmitAll,
    AdsServer,
    ObservationHooks,
    Peer,
    SnapshotSource,
    StatusRegistry,
    StreamHooks,
    StreamLimits,
    SyncState,
    Unobserved,
)
from sailplane.xds.snapshot import Snapshot
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET

__all__ = [
    "ADS_SERVICE",
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "PUSH_ORDER",
    "ROUTE",
    "SECRET",
    "AdmissionHooks",
    "AdmitAll",
    "AdsServer",
    "ObservationHooks",
    "Peer",
    "Snapshot",
    "SnapshotCache",
    "SnapshotSource",
    "StatusRegistry",
    "StreamHooks",
    "StreamLimits",
    "SyncState",
    "TypeResources",
    "Unobserved",
    "merge_types",
]
