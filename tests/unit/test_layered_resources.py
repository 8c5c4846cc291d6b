"""A proxy's layered resources (merge_types): delta entries come from the
shared parts, and nothing the size of a shared table is kept per proxy."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2

from sailplane.xds import ROUTE, TypeResources, merge_types


def _routes(*names: str) -> TypeResources:
    return TypeResources.build(
        ROUTE,
        [
            (
                name,
                route_pb2.RouteConfiguration(
                    name=name,
                    virtual_hosts=[
                        route_components_pb2.VirtualHost(name=f"{name}-vh", domains=["*"])
                    ],
                ),
            )
            for name in names
        ],
    )


def test_a_layered_subscription_gets_the_same_entries_as_an_unlayered_one() -> None:
    shared, own = _routes("15001", "9090"), _routes("inbound|8080||")
    merged = merge_types(shared, own)
    plain = _routes("15001", "9090", "inbound|8080||")
    for names in (frozenset({"15001", "inbound|8080||"}), frozenset({"9090", "missing"})):
        sent, body = merged.delta_all(names)
        expected_sent, expected_body = plain.delta_all(names)
        assert sent == expected_sent
        assert b"".join(body) == b"".join(expected_body)


def test_a_layered_subscription_keeps_no_joined_copy_on_the_proxys_object() -> None:
    shared, own = _routes("15001"), _routes("inbound|8080||")
    merged = merge_types(shared, own)
    names = frozenset({"15001", "inbound|8080||"})
    _, body = merged.delta_all(names)
    # The pieces are the shared parts' own entries, not copies of them.
    assert body[0] is shared.delta_chunk("15001")
    assert body[1] is own.delta_chunk("inbound|8080||")
    assert "_delta_all" not in vars(merged)
