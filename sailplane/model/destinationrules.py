"""Several DestinationRules for one host, as Istio consolidates them.

Istio (pilot/pkg/model/destination_rule.go ``mergeDestinationRule``, called
by push_context.go ``setDestinationRules`` per namespace) sorts the rules
with a ``workloadSelector`` first, then by creation time, and merges a rule
into an earlier one for the same host of the same namespace: the subsets are
concatenated (a subset name already there keeps the first definition), the
first rule with a top-level ``trafficPolicy`` gives it, the rest (exportTo,
name) stay the first rule's. Two selector-less rules merge into one; two
rules with equal selectors merge into one; a rule with a selector takes in
the subsets (and, if it has none, the policy) of the selector-less rules of
its namespace that come after it, and stays a rule of its own.

sailplane has no creation times: file order (file, line) takes their place,
so the rule written first is Istio's oldest. Which rule a proxy uses
(sidecar.go ``SidecarScope.DestinationRule``): the first rule with a
selector that is in the proxy's namespace and whose labels the proxy has,
else the selector-less one. Istio consolidates per namespace and a proxy
reads its own namespace's rules first; sailplane's clusters are shared by
the whole mesh, so the selector-less rules of one namespace serve every
proxy (the first namespace by name, as before), and only proxies a
selector picks get clusters of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from sailplane.model.hosts import host_matches
from sailplane.model.networking import DestinationRule, Subset
from sailplane.model.registry import selector_matches


def rule_order(rule: DestinationRule) -> tuple[bool, str, int, str, str]:
    """Istio's order (selector first, then oldest), file order for age."""
    source = rule.source
    return (
        not rule.workload_selector,
        source.file,
        source.position.line,
        rule.name,
        rule.namespace,
    )


def merge_rule(first: DestinationRule, later: DestinationRule) -> DestinationRule:
    """``later`` merged into ``first`` (mergeDestinationRule)."""
    names = {s.name for s in first.subsets}
    extra: list[Subset] = [s for s in later.subsets if s.name not in names]
    policy = first.traffic_policy if first.traffic_policy is not None else later.traffic_policy
    if not extra and policy is first.traffic_policy:
        return first
    return dataclasses.replace(first, subsets=(*first.subsets, *extra), traffic_policy=policy)


def duplicate_subsets(first: DestinationRule, later: DestinationRule) -> list[str]:
    """The subsets of ``later`` that merging drops (``first`` has them already)."""
    names = {s.name for s in first.subsets}
    return [s.name for s in later.subsets if s.name in names]


def consolidate(
    rules: Iterable[DestinationRule],
) -> tuple[dict[str, DestinationRule], dict[str, tuple[DestinationRule, ...]]]:
    """(host -> the merged selector-less rule every proxy uses, host -> the
    merged rules with a selector, in Istio's order). Selector-less rules of
    one host in several namespaces: the first namespace's (by name)."""
    ordered = sorted(rules, key=rule_order)
    plain: dict[tuple[str, str], DestinationRule] = {}  # (host, namespace) -> merged
    selected: dict[tuple[str, str], list[DestinationRule]] = {}
    for rule in ordered:
        key = (rule.host, rule.namespace)
        group = selected.setdefault(key, [])
        if rule.workload_selector:
            for i, earlier in enumerate(group):
                if earlier.workload_selector == rule.workload_selector:
                    group[i] = merge_rule(earlier, rule)
                    break
            else:
                group.append(rule)
            continue
        group[:] = [merge_rule(earlier, rule) for earlier in group]
        plain[key] = merge_rule(plain[key], rule) if key in plain else rule
    by_host: dict[str, DestinationRule] = {}
    for (host, _), rule in sorted(plain.items(), key=lambda item: item[0][1]):
        by_host.setdefault(host, rule)
    with_selector: dict[str, list[DestinationRule]] = {}
    for (host, _), group in selected.items():
        with_selector.setdefault(host, []).extend(group)
    return by_host, {h: tuple(sorted(g, key=rule_order)) for h, g in with_selector.items() if g}


Consolidated = tuple[Mapping[str, DestinationRule], Mapping[str, tuple[DestinationRule, ...]]]

# The last few results of consolidated(): (the rules, what they consolidate to).
_RECENT: list[tuple[tuple[DestinationRule, ...], Consolidated]] = []
_RECENT_SIZE = 4


def consolidated(rules: tuple[DestinationRule, ...]) -> Consolidated:
    """:func:`consolidate`, remembered for the last few rule tuples. One load
    makes several MeshConfigs with the same rules (each check returns a
    replaced one), and the incremental loader hands unchanged rules on as
    the same objects from load to load: 1,000 rules cost a comparison by
    identity, not a merge, every time. The results are never mutated."""
    for known, result in tuple(_RECENT):  # (a load thread and the loop share it)
        if known is rules or (
            len(known) == len(rules) and all(a is b for a, b in zip(known, rules, strict=True))
        ):
            return result
    result = consolidate(rules)
    _RECENT.insert(0, (rules, result))
    del _RECENT[_RECENT_SIZE:]
    return result


def _specificity(host: str) -> tuple[bool, int]:
    return ("*" not in host, len(host))


def most_specific(rules: Mapping[str, DestinationRule], hostname: str) -> DestinationRule | None:
    """The rule for a host: an exact host first, then the longest matching
    wildcard (istio.io: "the most specific matching host wins")."""
    exact = rules.get(hostname)
    if exact is not None:
        return exact
    best: DestinationRule | None = None
    for host, rule in rules.items():
        if host_matches(host, hostname) and (best is None or len(host) > len(best.host)):
            best = rule
    return best


def selecting_rule(
    selector_rules: Mapping[str, Sequence[DestinationRule]],
    shared: DestinationRule | None,
    hostname: str,
    namespace: str,
    labels: Mapping[str, str],
) -> DestinationRule | None:
    """The rule with a selector that applies to a proxy of ``namespace``
    with ``labels`` for ``hostname``, if one does and its host is at least
    as specific as the ``shared`` rule's; None otherwise."""
    best: DestinationRule | None = None
    for host, group in selector_rules.items():
        if not host_matches(host, hostname):
            continue
        if best is not None and _specificity(host) <= _specificity(best.host):
            continue
        for rule in group:
            if rule.namespace == namespace and selector_matches(rule.workload_selector, labels):
                best = rule
                break
    if best is None or (shared is not None and _specificity(shared.host) > _specificity(best.host)):
        return None
    return best


def subset_eds_name(
    cluster_name: str, shared: DestinationRule | None, rule: DestinationRule, subset: str
) -> str:
    """The EDS name of a cluster built for a rule with a selector: its own
    name when the shared rule's subset of that name picks the same labels
    (its ClusterLoadAssignment is the mesh's), else one of the rule's own."""
    if not subset:
        return cluster_name
    mine = rule.subset(subset)
    theirs = shared.subset(subset) if shared is not None else None
    if mine is not None and theirs is not None and dict(mine.labels) == dict(theirs.labels):
        return cluster_name
    return f"{cluster_name}|{rule.namespace}/{rule.name}"
