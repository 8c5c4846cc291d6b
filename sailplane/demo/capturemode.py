"""How the demo's apps reach their sidecars: transparent capture (as root:
every workload a pod, its traffic redirected by iptables, as Istio's
sidecars) or proxy mode (no privileges: the apps use their sidecar's HTTP
proxy). The demo says which, and why.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sailplane.demo import pods
from sailplane.demo.layout import Placement, pod_hosts, pod_subnet
from sailplane.errors import DemoError
from sailplane.model.mesh import MeshConfig

# What `sailplane capture` lets by (Istio's 1337, as uid and gid). The
# demo's proxies run as root in group 1337, and its apps as root: a checkout
# in a home directory others may not enter still runs (production sidecars
# run as uid 1337 itself, as docker-compose.yml does).
PROXY_GID = 1337
POD_PREFIX = "spd"  # network namespaces spd<pid>-<random>-<n>


class CaptureChoice(enum.Enum):
    AUTO = "auto"
    TRANSPARENT = "transparent"
    PROXY = "proxy"


@dataclass(frozen=True, slots=True)
class CaptureMode:
    transparent: bool
    reason: str = ""

    def line(self) -> str:
        if self.transparent:
            why = f" ({self.reason})" if self.reason else ""
            return (
                f"capture: transparent{why}: every workload in a network namespace of its "
                "own, its traffic redirected to its sidecar by iptables (sailplane capture)"
            )
        return (
            f"capture: proxy ({self.reason}): the apps reach the mesh through their "
            "sidecar's HTTP proxy (HTTP_PROXY)"
        )


def choose(choice: CaptureChoice, unable: str | None) -> CaptureMode:
    """Transparent capture when asked for, or (auto) when pods can be made
    (``unable``: why not, see pods.missing); else proxy mode."""
    if choice is CaptureChoice.PROXY:
        return CaptureMode(False, "--capture proxy")
    if unable is None:
        return CaptureMode(True, "running as root" if choice is CaptureChoice.AUTO else "")
    if choice is CaptureChoice.TRANSPARENT:
        raise DemoError(f"--capture transparent {unable}")
    return CaptureMode(False, f"transparent capture {unable}")


def make_pods(
    mesh: MeshConfig, where: Sequence[Placement]
) -> tuple[pods.PodNetwork, list[Placement]]:
    """One pod per workload at its address, a link from this namespace to
    theirs, and each sidecar's capture rules (a gateway is not captured,
    Istio's neither); the placements with their pods' namespaces. The network
    is the caller's to close, whatever happens after."""
    network = pods.PodNetwork(
        [p.workload.id for p in where],
        pod_subnet(mesh),
        POD_PREFIX,
        host_link=True,
        hosts=pod_hosts(mesh),
        addresses={p.workload.id: p.address for p in where},
    ).__enter__()
    try:
        for place in where:
            if place.is_gateway:
                continue
            pod = network[place.workload.id]
            done = network.run(pod, [sys.executable, "-m", "sailplane", "capture",
                                     "--proxy-gid", str(PROXY_GID)])  # fmt: skip
            if done.returncode != 0:
                raise DemoError(f"sailplane capture in {pod.netns}: {done.stderr.strip()}")
    except BaseException:
        network.close()
        raise
    return network, [dataclasses.replace(p, netns=network[p.workload.id].netns) for p in where]


def in_place(
    network: pods.PodNetwork | None, place: Placement, argv: list[str], gid: int = 0
) -> list[str]:
    """``argv`` as run for ``place``: in its pod as root in group ``gid``
    alone, or as it is."""
    if network is None or not place.in_pod:
        return argv
    return network[place.workload.id].argv(argv, uid=0, gid=gid)


def inside(place: Placement, check: Callable[[], bool]) -> Callable[[], bool]:
    """``check`` run where ``place`` lives (its pod, if it has one)."""
    if place.netns is None:
        return check
    netns = place.netns
    return lambda: pods.call_in(netns, check)
