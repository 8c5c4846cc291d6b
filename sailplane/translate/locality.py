"""Locality load balancing: the priorities and locality weights of a
ClusterLoadAssignment, relative to the proxy that receives it.

Istio (pilot/pkg/networking/core/loadbalancer/loadbalancer.go) groups a
cluster's endpoints by locality and, for each proxy, rewrites the groups'
``priority`` (failover: same subzone 0, same zone 1, same region 2, other
regions 3, regions not named by a ``failover`` rule 4; then compacted) or
``load_balancing_weight`` (distribute). Failover happens only when the
traffic policy has outlier detection: without it Envoy would never see an
endpoint fail and never leave priority 0, so Istio does not apply it.

What an assignment depends on is a :class:`LocalityView`: the proxy's
locality and the labels ``failoverPriority`` names, so proxies of one
locality share their assignments (server/generation.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from sailplane.model.locality import LocalityLbSetting
from sailplane.model.mesh import MeshConfig
from sailplane.model.networking import LoadBalancer, TrafficPolicy
from sailplane.model.registry import NOWHERE, Endpoint, Locality

# Istio's network label: failoverPriority may name it first (applyFailoverPriorityPerLocality).
NETWORK_LABEL = "topology.istio.io/network"


@dataclass(frozen=True, slots=True)
class LocalityView:
    """What of a proxy its endpoints depend on."""

    locality: Locality = NOWHERE
    # The proxy's labels (with its topology labels) that failoverPriority names.
    labels: tuple[tuple[str, str], ...] = ()
    labelled: bool = False  # the proxy has any label at all (Istio needs some)


NEUTRAL_VIEW = LocalityView()


@dataclass(frozen=True, slots=True)
class Balancing:
    """One cluster's locality settings, for one proxy view."""

    setting: LocalityLbSetting | None
    failover: bool  # the traffic policy has outlier detection
    view: LocalityView = field(default=NEUTRAL_VIEW)

    @property
    def applies(self) -> bool:
        """Whether the assignment depends on the proxy (Istio's ApplyLocalityLoadBalancer)."""
        return self.setting is not None and (bool(self.setting.distribute) or self.failover)

    @property
    def weighted_config(self) -> bool:
        """Whether the cluster needs ``locality_weighted_lb_config`` (ApplyToCluster)."""
        s = self.setting
        if s is None:
            return False
        return bool(s.distribute) or (self.failover and bool(s.failover or s.failover_priority))


def effective_setting(mesh: MeshConfig, lb: LoadBalancer | None) -> LocalityLbSetting | None:
    """The rule's setting, else the mesh's (GetEffectiveLbSetting); None when off."""
    if lb is not None and lb.locality is not None:
        return None if lb.locality.enabled is False else lb.locality
    return mesh.settings.locality_lb


def balancing(mesh: MeshConfig, policy: TrafficPolicy | None, view: LocalityView) -> Balancing:
    policy = policy or TrafficPolicy()
    setting = effective_setting(mesh, policy.load_balancer)
    return Balancing(setting, policy.outlier_detection is not None, view)


def priority_label_names(mesh: MeshConfig) -> frozenset[str]:
    """Every label a failoverPriority names (``label=value`` counts as ``label``)."""
    settings: list[LocalityLbSetting | None] = [mesh.settings.locality_lb]
    for rule in mesh.destination_rules:
        policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets)]
        for policy in policies:
            if policy is None:
                continue
            for p in (policy, *policy.port_level.values()):
                settings.append(p.load_balancer.locality if p.load_balancer else None)
    return frozenset(
        name.split("=", 1)[0] for s in settings if s is not None for name in s.failover_priority
    )


def proxy_view(locality: Locality, labels: Mapping[str, str], names: Iterable[str]) -> LocalityView:
    """A proxy's view: its locality and the labels named (its own, with
    the topology labels of its locality, as Istio's setTopologyLabels)."""
    names = tuple(names)
    if not names:  # no failoverPriority anywhere: only the locality counts
        return LocalityView(locality) if locality else NEUTRAL_VIEW
    augmented = {**labels, **locality.topology_labels()}
    chosen = tuple(sorted((n, augmented[n]) for n in names if n in augmented))
    return LocalityView(locality, chosen, bool(augmented))


def group_by_locality(endpoints: Iterable[Endpoint]) -> list[tuple[Locality, list[Endpoint]]]:
    """Endpoints by locality, localities in label order (Istio sorts them so)."""
    groups: dict[Locality, list[Endpoint]] = {}
    for e in endpoints:
        groups.setdefault(e.locality, []).append(e)
    return sorted(groups.items(), key=lambda item: item[0].label)


def apply_locality_lb(
    assignment: endpoint_pb2.ClusterLoadAssignment,
    groups: Sequence[Sequence[Endpoint]],
    how: Balancing,
) -> None:
    """ApplyLocalityLoadBalancer: ``groups[i]`` are the instances behind
    ``assignment.endpoints[i]``, in the order of its lb_endpoints."""
    setting = how.setting
    if setting is None or not how.applies:
        return
    proxy = how.view.locality
    if setting.distribute:
        _apply_weights(proxy, assignment, setting)
    elif setting.failover_priority:
        _apply_failover_priorities(assignment, groups, how.view, setting.failover_priority)
        if setting.failover:
            _apply_failover(proxy, assignment, setting.failover)
    else:
        _apply_failover(proxy, assignment, setting.failover)


def locality_match(locality: Locality, pattern: str) -> bool:
    """util.LocalityMatch: ``region/zone/subzone`` with ``*`` or omitted parts."""
    rule = Locality.parse(pattern)
    return (
        (rule.region == "*" or locality.region == rule.region)
        and (rule.zone in ("*", "") or locality.zone == rule.zone)
        and (rule.subzone in ("*", "") or locality.subzone == rule.subzone)
    )


def lb_priority(proxy: Locality, other: Locality) -> int:
    """util.LbPriority: 0 same subzone, 1 same zone, 2 same region, 3 else."""
    if proxy.region != other.region:
        return 3
    if proxy.zone != other.zone:
        return 2
    return 0 if proxy.subzone == other.subzone else 1


def _locality_of(group: endpoint_components_pb2.LocalityLbEndpoints) -> Locality:
    return Locality(group.locality.region, group.locality.zone, group.locality.sub_zone)


def _apply_weights(
    proxy: Locality, assignment: endpoint_pb2.ClusterLoadAssignment, setting: LocalityLbSetting
) -> None:
    """applyLocalityWeights: the first ``distribute`` entry whose ``from``
    matches the proxy sets the groups' weights; groups it names no
    destination for lose their endpoints."""
    groups = assignment.endpoints
    for rule in setting.distribute:
        if not locality_match(proxy, rule.source):
            continue
        unmatched = set(range(len(groups)))
        for pattern, weight in rule.to:
            chosen: dict[int, int] = {}
            for i, group in enumerate(groups):
                if i in unmatched and locality_match(_locality_of(group), pattern):
                    unmatched.discard(i)
                    has = group.HasField("load_balancing_weight")
                    chosen[i] = group.load_balancing_weight.value if has else 1
            total = sum(chosen.values())
            for i, original in chosen.items():
                share = original * weight / total
                if share > 0:
                    groups[i].load_balancing_weight.value = math.ceil(share)
        for i in unmatched:
            del groups[i].lb_endpoints[:]
        return


def _compact(
    priorities: Mapping[int, list[int]],
    groups: Sequence[endpoint_components_pb2.LocalityLbEndpoints],
) -> None:
    """Priorities run 0..N without gaps, in the order they had."""
    for rank, priority in enumerate(sorted(priorities)):
        if rank != priority:
            for index in priorities[priority]:
                groups[index].priority = rank


def _apply_failover(
    proxy: Locality,
    assignment: endpoint_pb2.ClusterLoadAssignment,
    failover: tuple[tuple[str, str], ...],
) -> None:
    """applyLocalityFailover: priority by how much of the locality matches;
    another region is 3 if a ``failover`` rule from the proxy's region names
    it (or none does), else 4. Composes with earlier priorities (x5)."""
    by_priority: dict[int, list[int]] = {}
    for i, group in enumerate(assignment.endpoints):
        locality = _locality_of(group)
        priority = lb_priority(proxy, locality)
        if priority == 3:
            for source, target in failover:
                if source == proxy.region:
                    if locality.region != target:
                        priority = 4
                    break
        combined = group.priority * 5 + priority
        group.priority = combined
        by_priority.setdefault(combined, []).append(i)
    _compact(by_priority, assignment.endpoints)


def _apply_failover_priorities(
    assignment: endpoint_pb2.ClusterLoadAssignment,
    groups: Sequence[Sequence[Endpoint]],
    view: LocalityView,
    priorities: tuple[str, ...],
) -> None:
    """applyFailoverPriorities: each locality group split by how many of
    the labels (in order) the endpoint shares with the proxy."""
    if not view.labelled or not groups:
        return
    proxy_labels = dict(view.labels)
    out: list[endpoint_components_pb2.LocalityLbEndpoints] = []
    for group, instances in zip(assignment.endpoints, groups, strict=True):
        out.extend(_split_by_priority(group, instances, proxy_labels, priorities))
    by_priority: dict[int, list[int]] = {}
    for i, group in enumerate(out):
        by_priority.setdefault(group.priority, []).append(i)
    _compact(by_priority, out)
    del assignment.endpoints[:]
    assignment.endpoints.extend(out)


def _split_by_priority(
    group: endpoint_components_pb2.LocalityLbEndpoints,
    instances: Sequence[Endpoint],
    proxy_labels: Mapping[str, str],
    priorities: tuple[str, ...],
) -> list[endpoint_components_pb2.LocalityLbEndpoints]:
    """applyFailoverPriorityPerLocality."""
    lowest = len(priorities)
    includes_network = lowest > 0 and priorities[0] == NETWORK_LABEL
    names = [p.split("=", 1)[0] for p in priorities]
    overrides = dict(p.split("=", 1) for p in priorities if "=" in p)
    by_priority: dict[int, list[int]] = {}
    for i, instance in enumerate(instances):
        labels = {**instance.labels, **instance.locality.topology_labels()}
        priority = adjust = 0
        for j, name in enumerate(names):
            wanted = overrides.get(name, proxy_labels.get(name, ""))
            if wanted != labels.get(name, ""):
                if j == 0 and includes_network:
                    adjust = lowest  # another network: after every same-network tier
                    continue
                priority = lowest - j
                break
        by_priority.setdefault(priority + adjust, []).append(i)
    out = []
    for priority in sorted(by_priority):
        part = endpoint_components_pb2.LocalityLbEndpoints()
        part.CopyFrom(group)
        del part.lb_endpoints[:]
        part.priority = priority
        chosen = by_priority[priority]
        part.lb_endpoints.extend(group.lb_endpoints[i] for i in chosen)
        part.load_balancing_weight.value = sum(instances[i].weight for i in chosen)
        out.append(part)
    return out
