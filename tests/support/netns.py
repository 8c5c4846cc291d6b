"""Pods in network namespaces for end-to-end tests of what needs real
networking (iptables capture, original destinations): sailplane's own
:mod:`sailplane.demo.pods` (what ``sailplane demo`` runs in as root), on a
/24 that exists only inside the test namespaces and with no link to the
host's namespace.

Root only (``skip_reason()`` says why not). Leaving a ``PodNetwork``, even on
failure, kills every process it started or left inside its namespaces and
deletes them; names carry the creating pid, so a later network removes what
a killed run left behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from sailplane.demo import pods
from sailplane.demo.pods import Pod
from tests.support.ci import skip_unless_ci

PREFIX = "spt"
SUBNET = "10.250.0"

__all__ = ["Pod", "PodNetwork", "skip_reason"]


def skip_reason() -> str | None:
    """Why these tests cannot run here, or None (in CI: an error, see ci.py)."""
    reason = pods.missing()
    return skip_unless_ci(reason and f"{reason}; CI runs as root")


class PodNetwork(pods.PodNetwork):
    """Pods named ``names`` on ``SUBNET``.0/24 (``.11``, ``.12``, ...)."""

    def __init__(self, names: Sequence[str], subnet: str = SUBNET) -> None:
        super().__init__(names, subnet, PREFIX)
