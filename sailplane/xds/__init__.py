"""xDS serving: snapshots, the cache, the ADS server and per-proxy status.

Nothing here knows Istio kinds; it moves Envoy resources to Envoy proxies.
"""

from sailplane.xds.cache import SnapshotCache
from sailplane.xds.server import ADS_SERVICE, AdsServer, CacheHooks, StreamHooks
from sailplane.xds.snapshot import Snapshot, TypeResources, merge_types
from sailplane.xds.status import StatusRegistry, SyncState
from sailplane.xds.types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET

__all__ = [
    "ADS_SERVICE",
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "PUSH_ORDER",
    "ROUTE",
    "SECRET",
    "AdsServer",
    "CacheHooks",
    "Snapshot",
    "SnapshotCache",
    "StatusRegistry",
    "StreamHooks",
    "SyncState",
    "TypeResources",
    "merge_types",
]
