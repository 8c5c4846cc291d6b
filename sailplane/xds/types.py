"""xDS type URLs and the order in which they are pushed."""

from __future__ import annotations

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
# VHDS: served only on delta streams, derived from their route configs
# (see vhds.py and server/vhds.py); never in a Snapshot.
VIRTUAL_HOST = _PREFIX + "envoy.config.route.v3.VirtualHost"

# Make before break (xDS protocol, "Eventual consistency considerations"):
# secrets and clusters exist before the endpoints that fill them, clusters
# before the listeners and routes that point at them. The order of this tuple
# is the push order; removals run the other way (see server/sotw.py).
PUSH_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)
# What a stream's status lists: virtual hosts (delta only) follow their routes.
STATUS_ORDER = (*PUSH_ORDER, VIRTUAL_HOST)

# Types whose empty subscription means "everything" (legacy wildcard).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})

SHORT_NAMES = {
    CLUSTER: "clusters",
    ENDPOINT: "endpoints",
    LISTENER: "listeners",
    ROUTE: "routes",
    SECRET: "secrets",
    VIRTUAL_HOST: "vhosts",
}
BY_SHORT_NAME = {short: url for url, short in SHORT_NAMES.items()}


def type_url_of(full_name: str) -> str:
    return _PREFIX + full_name
