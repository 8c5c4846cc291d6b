"""Istio's LocalityLoadBalancerSetting as a typed value (a DestinationRule's
``loadBalancer.localityLbSetting``, or the mesh config's default); how it
becomes Envoy priorities and weights is translate/locality.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """``distribute[]``: from proxies in ``source``, send ``to`` (locality
    pattern -> weight, in the order written) their shares of traffic."""

    source: str
    to: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class LocalityLbSetting:
    """Istio's LocalityLoadBalancerSetting (translate/locality.py)."""

    enabled: bool | None = None  # None: not said (on, as Istio's default)
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[tuple[str, str], ...] = ()  # (from region, to region)
    failover_priority: tuple[str, ...] = ()  # label names, or "label=value"


# Istio's mesh default (pkg/config/mesh DefaultMeshConfig): enabled, nothing else.
DEFAULT_LOCALITY_LB = LocalityLbSetting(enabled=True)
