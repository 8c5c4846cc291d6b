"""The blocks written once for every golden file: ``translate/_shared.yaml``.

Each block is what a sailplane builder returns for its default input, so the
blocks follow the code: when Istio's default retry policy changes,
``pytest tests/golden --update-golden`` rewrites ``_shared.yaml`` and the
goldens, where every such policy is ``{$ref: default-retry-policy}``, stay as
they are. A subtree is replaced only when it is equal to the block as a whole
(see render.share); anything that differs, even by one field, is written out
in full.
"""

from __future__ import annotations

from pathlib import Path

from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import Retries
from sailplane.model.registry import Workload
from sailplane.model.sidecar import OUTBOUND_MODES, MeshSettings
from sailplane.model.source import Position, Source
from sailplane.model.telemetry import (
    ENVOY_PROVIDER,
    NOWHERE,
    Directions,
    WorkloadTelemetry,
    builtin_provider,
)
from sailplane.translate.authz import http_rbac_filters
from sailplane.translate.common import ads_config_source
from sailplane.translate.egress import (
    blackhole_cluster,
    catch_all_virtual_host,
    passthrough_cluster,
)
from sailplane.translate.httproute import build_retry_policy
from sailplane.translate.listeners import outbound_http_filters
from sailplane.translate.mtls import ROOT_SECRET, WORKLOAD_SECRET, downstream_mtls_socket, sds
from sailplane.translate.policy import circuit_breakers
from sailplane.translate.proxy import Proxy
from sailplane.translate.telemetry import access_logs, peer_filters
from tests.golden.render import Tree, dump_protos, expand, proto_tree, share, share_within

SHARED_FILE = Path(__file__).parent / "translate" / "_shared.yaml"

_HEADER = """\
# Blocks shared by the golden files under tests/golden/translate and
# tests/golden/controller: there, {$ref: NAME} stands for block NAME, exactly
# (the whole subtree was equal to it). Built from sailplane's builders by
# tests/golden/shared.py; regenerate with `pytest tests/golden --update-golden`.
"""


def _telemetry_blocks() -> dict[str, Tree]:
    """The access log stream to sailplane (the default telemetry) and the
    taking half of the peer exchange, per side; Envoy's file access log to
    stdout in Istio's format (``accessLogFile: /dev/stdout``)."""
    proxy = Proxy(Workload("shared", "default", "127.0.0.1", Source("shared", Position(1, 1))))
    stdout = builtin_provider(MeshSettings(access_log_file="/dev/stdout"), ENVOY_PROVIDER)
    assert stdout is not None
    to_stdout = WorkloadTelemetry(metrics=NOWHERE, file_logs=((stdout, Directions()),))
    out = {}
    for outbound in (False, True):
        side = "outbound" if outbound else "inbound"
        for http in (True, False):
            (log,) = access_logs(proxy, WorkloadTelemetry(), outbound, http)
            out[f"access-log/{log.name}/{side}"] = proto_tree(log)
        take = peer_filters(proxy.id, outbound)[0]
        out[f"http-filter/{take.name}/{side}"] = proto_tree(take)
    (log,) = access_logs(proxy, to_stdout, outbound=False)
    out[f"access-log/{log.name}/stdout"] = proto_tree(log)
    return out


def shared_blocks() -> dict[str, Tree]:
    """Block name -> the block, as render.proto_tree writes it."""
    default_retry, retry = build_retry_policy(None), build_retry_policy(Retries(attempts=1))
    assert default_retry is not None and retry is not None
    blocks: dict[str, Tree] = {
        "ads-config-source": proto_tree(ads_config_source()),
        "default-retry-policy": proto_tree(default_retry),
        "retry-previous-hosts": proto_tree(retry.retry_host_predicate[0]),
        "unlimited-circuit-breakers": proto_tree(circuit_breakers(None)),
        f"sds/{WORKLOAD_SECRET}": proto_tree(sds(WORKLOAD_SECRET)),
        f"sds/{ROOT_SECRET}": proto_tree(sds(ROOT_SECRET)),
        "downstream-mtls": proto_tree(downstream_mtls_socket(MeshConfig().trust_domain)),
        **_telemetry_blocks(),
    }
    for http_filter in (*http_rbac_filters(), *outbound_http_filters()):
        blocks[f"http-filter/{http_filter.name}"] = proto_tree(http_filter)
    for cluster in (passthrough_cluster(), blackhole_cluster()):
        blocks[f"cluster/{cluster.name}"] = proto_tree(cluster)
    for mode in OUTBOUND_MODES:
        vhost = catch_all_virtual_host(mode)
        blocks[f"virtual-host/{vhost.name}"] = proto_tree(vhost)
    return dict(sorted(blocks.items()))


SHARED = shared_blocks()


# A repeat of at least this many lines within one file is written once.
REPEAT_LINES = 16


def render_shared(tree: Tree) -> str:
    """``tree`` as YAML with the shared blocks, and repeats within the file,
    as references; exact: expanding them gives ``tree`` back (checked here)."""
    shared = share_within(share(tree, SHARED), REPEAT_LINES)
    assert expand(shared, SHARED) == tree
    return dump_protos(shared)


def render_shared_file() -> str:
    """``_shared.yaml``: each block written in terms of the smaller ones."""
    body = {name: share(block, SHARED, keep_root=True) for name, block in SHARED.items()}
    return _HEADER + dump_protos(body)
