"""Table tests of locality load balancing (translate/locality.py and
endpoints.build_load_assignment), as Istio's loadbalancer.go computes it
for a proxy: each row is a proxy locality, the setting, and the expected
(locality, priority, weight, addresses) of every LocalityLbEndpoints.

Endpoints: 10.0.0.1 region1/zone1/sub1, .2 region1/zone1/sub2,
.3 region1/zone2, .4 region2/zone1, .5 region3/zone1 (weight 3 on .5).
"""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2

from sailplane.model.locality import LocalityDistribute, LocalityLbSetting
from sailplane.model.registry import Endpoint, Locality, Protocol, ServicePort
from sailplane.translate.endpoints import build_load_assignment
from sailplane.translate.locality import Balancing, LocalityView, locality_match, proxy_view

PORT = ServicePort(80, "http", Protocol.HTTP)
ENDPOINTS = (
    Endpoint("10.0.0.1", {"version": "v1"}, locality=Locality("region1", "zone1", "sub1")),
    Endpoint("10.0.0.2", {"version": "v2"}, locality=Locality("region1", "zone1", "sub2")),
    Endpoint("10.0.0.3", {"version": "v1"}, locality=Locality("region1", "zone2")),
    Endpoint("10.0.0.4", {"version": "v2"}, locality=Locality("region2", "zone1")),
    Endpoint("10.0.0.5", {"version": "v1"}, weight=3, locality=Locality("region3", "zone1")),
)
HERE = LocalityView(Locality("region1", "zone1", "sub1"))

# (name, setting, outlier detection, view, [(locality, priority, weight, addresses)])
Row = tuple[str, LocalityLbSetting | None, bool, LocalityView, list[tuple[str, int, int, str]]]
ROWS: list[Row] = [
    (
        "failover-default-by-proximity",
        LocalityLbSetting(enabled=True),
        True,
        HERE,
        [
            ("region1/zone1/sub1", 0, 1, ".1"),
            ("region1/zone1/sub2", 1, 1, ".2"),
            ("region1/zone2", 2, 1, ".3"),
            ("region2/zone1", 3, 1, ".4"),
            ("region3/zone1", 3, 3, ".5"),
        ],
    ),
    (
        "no-outlier-detection-no-failover",  # Istio: failover needs outlier detection
        LocalityLbSetting(enabled=True, failover=(("region1", "region3"),)),
        False,
        HERE,
        [
            ("region1/zone1/sub1", 0, 1, ".1"),
            ("region1/zone1/sub2", 0, 1, ".2"),
            ("region1/zone2", 0, 1, ".3"),
            ("region2/zone1", 0, 1, ".4"),
            ("region3/zone1", 0, 3, ".5"),
        ],
    ),
    (
        "failover-region-named-first-others-last",
        LocalityLbSetting(failover=(("region1", "region3"),)),
        True,
        HERE,
        [
            ("region1/zone1/sub1", 0, 1, ".1"),
            ("region1/zone1/sub2", 1, 1, ".2"),
            ("region1/zone2", 2, 1, ".3"),
            ("region2/zone1", 4, 1, ".4"),
            ("region3/zone1", 3, 3, ".5"),
        ],
    ),
    (
        "failover-from-another-region-does-not-apply",
        LocalityLbSetting(failover=(("region2", "region3"),)),
        True,
        LocalityView(Locality("region1", "zone2")),
        [
            ("region1/zone1/sub1", 1, 1, ".1"),
            ("region1/zone1/sub2", 1, 1, ".2"),
            ("region1/zone2", 0, 1, ".3"),
            ("region2/zone1", 2, 1, ".4"),
            ("region3/zone1", 2, 3, ".5"),
        ],
    ),
    (
        "proxy-without-locality-everything-elsewhere",
        LocalityLbSetting(),
        True,
        LocalityView(),
        [
            ("region1/zone1/sub1", 0, 1, ".1"),
            ("region1/zone1/sub2", 0, 1, ".2"),
            ("region1/zone2", 0, 1, ".3"),
            ("region2/zone1", 0, 1, ".4"),
            ("region3/zone1", 0, 3, ".5"),
        ],
    ),
    (
        "distribute-80-20-with-wildcards",
        LocalityLbSetting(
            distribute=(
                LocalityDistribute("region2/*", (("region2/*", 100),)),
                LocalityDistribute("region1/zone1/*", (("region1/zone1/*", 80), ("region2/*", 20))),
            )
        ),
        False,
        HERE,
        [
            ("region1/zone1/sub1", 0, 40, ".1"),  # ceil(1 * 80 / 2)
            ("region1/zone1/sub2", 0, 40, ".2"),
            ("region1/zone2", 0, 1, ""),  # not named: no endpoints
            ("region2/zone1", 0, 20, ".4"),
            ("region3/zone1", 0, 3, ""),
        ],
    ),
    (
        "distribute-shares-a-locality-weight-by-endpoint-weight",
        LocalityLbSetting(
            distribute=(LocalityDistribute("*", (("region3/*", 50), ("region1/zone1/*", 50))),)
        ),
        False,
        HERE,
        [
            ("region1/zone1/sub1", 0, 25, ".1"),  # ceil(1 * 50 / 2)
            ("region1/zone1/sub2", 0, 25, ".2"),
            ("region1/zone2", 0, 1, ""),
            ("region2/zone1", 0, 1, ""),
            ("region3/zone1", 0, 50, ".5"),  # ceil(3 * 50 / 3)
        ],
    ),
    (
        "distribute-no-from-matches-nothing-changes",
        LocalityLbSetting(distribute=(LocalityDistribute("region9", (("region1", 100),)),)),
        False,
        HERE,
        [
            ("region1/zone1/sub1", 0, 1, ".1"),
            ("region1/zone1/sub2", 0, 1, ".2"),
            ("region1/zone2", 0, 1, ".3"),
            ("region2/zone1", 0, 1, ".4"),
            ("region3/zone1", 0, 3, ".5"),
        ],
    ),
    (
        "failover-priority-by-label-splits-localities",
        LocalityLbSetting(failover_priority=("version",)),
        True,
        proxy_view(Locality("region1", "zone1", "sub1"), {"version": "v2"}, ["version"]),
        [
            ("region1/zone1/sub1", 1, 1, ".1"),
            ("region1/zone1/sub2", 0, 1, ".2"),
            ("region1/zone2", 1, 1, ".3"),
            ("region2/zone1", 0, 1, ".4"),
            ("region3/zone1", 1, 3, ".5"),
        ],
    ),
    (
        "failover-priority-with-override-value",
        LocalityLbSetting(failover_priority=("version=v1",)),
        True,
        proxy_view(Locality(), {"version": "v2"}, ["version"]),
        [
            ("region1/zone1/sub1", 0, 1, ".1"),
            ("region1/zone1/sub2", 1, 1, ".2"),
            ("region1/zone2", 0, 1, ".3"),
            ("region2/zone1", 1, 1, ".4"),
            ("region3/zone1", 0, 3, ".5"),
        ],
    ),
    (
        "failover-priority-then-region-failover",
        LocalityLbSetting(failover_priority=("version",), failover=(("region1", "region3"),)),
        True,
        proxy_view(Locality("region1", "zone1", "sub1"), {"version": "v1"}, ["version"]),
        [  # label tier x 5 + proximity (3, or 4 for a region no rule names), compacted
            ("region1/zone1/sub1", 0, 1, ".1"),  # 0
            ("region1/zone2", 1, 1, ".3"),  # 2
            ("region3/zone1", 2, 3, ".5"),  # 3
            ("region1/zone1/sub2", 3, 1, ".2"),  # 5 + 1
            ("region2/zone1", 4, 1, ".4"),  # 5 + 4
        ],
    ),
    ("disabled-rule-nothing", None, True, HERE, []),
]


def _groups(
    setting: LocalityLbSetting | None, failover: bool, view: LocalityView
) -> list[tuple[str, int, int, str]]:
    assignment = build_load_assignment(
        "c", PORT, ENDPOINTS, None, Balancing(setting, failover, view)
    )
    out = []
    for group in assignment.endpoints:
        where = Locality(group.locality.region, group.locality.zone, group.locality.sub_zone)
        addresses = ",".join(
            e.endpoint.address.socket_address.address.removeprefix("10.0.0")
            for e in group.lb_endpoints
        )
        out.append((where.label, group.priority, group.load_balancing_weight.value, addresses))
    return sorted(out)


@pytest.mark.parametrize(
    ("name", "setting", "failover", "view", "expected"), ROWS, ids=[r[0] for r in ROWS]
)
def test_locality_priorities_and_weights(
    name: str,
    setting: LocalityLbSetting | None,
    failover: bool,
    view: LocalityView,
    expected: list[tuple[str, int, int, str]],
) -> None:
    got = _groups(setting, failover, view)
    if not expected:  # no setting: grouped by locality, weights, no priorities
        assert got == sorted(
            (g[0], 0, g[2], g[3]) for g in _groups(LocalityLbSetting(), False, view)
        )
        return
    assert got == sorted(expected)


def test_without_localities_or_settings_the_assignment_is_one_group_of_no_locality() -> None:
    """One group, with an empty locality and the endpoints' total weight: both
    present, as gRPC's xDS client requires (gRFC A27) and Istio sends."""
    plain = tuple(Endpoint(e.address, e.labels, weight=e.weight) for e in ENDPOINTS)
    assignment = build_load_assignment("c", PORT, plain)
    (group,) = assignment.endpoints
    assert group.HasField("locality") and group.locality == base_pb2.Locality()
    assert group.load_balancing_weight.value == sum(e.weight for e in plain)
    assert len(group.lb_endpoints) == 5


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("region1", True),
        ("region1/zone1", True),
        ("region1/zone1/sub1", True),
        ("region1/zone1/sub2", False),
        ("region1/*", True),
        ("region1/zone2/*", False),
        ("*", True),
        ("region2", False),
    ],
)
def test_locality_match(pattern: str, matches: bool) -> None:
    assert locality_match(Locality("region1", "zone1", "sub1"), pattern) is matches
