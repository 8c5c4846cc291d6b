"""Which Envoy stats a sidecar keeps: the bootstrap's ``stats_config``.

Building a cluster's stats is most of what an Envoy spends applying a large
CDS: at 1,000 clusters each outbound cluster brings ~150 counters, gauges
and histograms, every name run through the tag extractors, and four Envoys
on two cores took 1.4 s from spawn to every cluster active, 0.7 s without
them (``python -m benchmarks peer 1000 4 --probe-only``, benchmarks/README).
Istio's bootstrap keeps per-cluster stats only for its xDS cluster. sailplane
does as Istio for the part that grows with the mesh: the stats of the
outbound clusters (``cluster.outbound|...``) are not created unless a
workload asks for them with Istio's ``sidecar.istio.io/statsInclusion*``
annotations; listener, HTTP, server, inbound-cluster and control-plane
stats, whose number does not grow with the mesh, are all kept. Cluster
traffic stats are created on first use (Envoy's deferred creation).
"""

from __future__ import annotations

import re

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from sailplane.model.registry import StatsInclusion

# Stats whose number grows with the mesh: one set per outbound cluster.
OUTBOUND_CLUSTER_STATS = "cluster.outbound|"


def not_prefix_regex(prefix: str) -> str:
    """An RE2 pattern (no lookahead) matching the whole of every string that
    does not start with ``prefix`` (Envoy's ``safe_regex`` must match the
    whole name): one that differs from it at some position, or ends before
    it does."""
    alternatives = []
    for i, char in enumerate(prefix):
        head = re.escape(prefix[:i])
        alternatives.append(f"{head}[^{re.escape(char)}]")
        alternatives.append(f"{head}$")
    return "(?:" + "|".join(alternatives) + ").*"


def apply_stats_config(bootstrap: bootstrap_pb2.Bootstrap, extra: StatsInclusion) -> None:
    """Everything but the outbound clusters' stats, plus what ``extra`` names."""
    bootstrap.deferred_stat_options.enable_deferred_creation_stats = True
    if any(OUTBOUND_CLUSTER_STATS.startswith(prefix) for prefix in extra.prefixes):
        return  # all of them asked for: every stat, no matcher
    matcher = bootstrap.stats_config.stats_matcher
    if not extra:
        matcher.exclusion_list.patterns.append(
            string_pb2.StringMatcher(prefix=OUTBOUND_CLUSTER_STATS)
        )
        return
    # Exclusion lists have no exceptions: the same set as an inclusion list.
    patterns = matcher.inclusion_list.patterns
    patterns.append(_regex(not_prefix_regex(OUTBOUND_CLUSTER_STATS)))
    patterns.extend(string_pb2.StringMatcher(prefix=p) for p in extra.prefixes)
    patterns.extend(string_pb2.StringMatcher(suffix=s) for s in extra.suffixes)
    patterns.extend(_regex(r) for r in extra.regexps)


def _regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def merge(*inclusions: StatsInclusion) -> StatsInclusion:
    """The patterns of all, each once, in order."""
    return StatsInclusion(
        prefixes=tuple(dict.fromkeys(p for i in inclusions for p in i.prefixes)),
        suffixes=tuple(dict.fromkeys(s for i in inclusions for s in i.suffixes)),
        regexps=tuple(dict.fromkeys(r for i in inclusions for r in i.regexps)),
    )
