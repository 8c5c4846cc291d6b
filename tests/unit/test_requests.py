"""State-of-the-world requests are read with shared name sets, found by their
bytes; whatever the bytes, the result is what a full parse gives. What the
sharing holds is bounded, and goes with the requests and streams that hold it."""

from __future__ import annotations

import gc
import random
from typing import TypeVar

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from sailplane.errors import LimitExceeded
from sailplane.xds import CLUSTER, ENDPOINT
from sailplane.xds.server import requests
from sailplane.xds.server.requests import first_node, parse_delta_request, parse_sotw_request

M = TypeVar("M", bound=Message)

NAMES = [f"outbound|8080|v{i % 2 + 1}|svc-{i:05d}.default.svc.cluster.local" for i in range(400)]


def _request(names: list[str], **fields: object) -> discovery_pb2.DiscoveryRequest:
    values: dict[str, object] = {"version_info": "v1", "response_nonce": "7", **fields}
    return discovery_pb2.DiscoveryRequest(resource_names=names, type_url=ENDPOINT, **values)


def _same(raw: bytes) -> frozenset[str]:
    """Parse ``raw``; assert it reads exactly as a full parse; return the names."""
    got = parse_sotw_request(raw)
    full = discovery_pb2.DiscoveryRequest.FromString(raw)
    assert got.names == frozenset(full.resource_names)
    assert _without(got.message, "resource_names") == _without(full, "resource_names")
    return got.names


def _without(message: M, field: str) -> M:
    """A copy of ``message`` with ``field`` cleared."""
    copy: M = type(message)()
    copy.CopyFrom(message)
    copy.ClearField(field)
    return copy


def test_acks_with_the_same_names_share_one_set_and_read_as_a_full_parse() -> None:
    node = base_pb2.Node(id="a.default", cluster="a")
    first = _same(_request(NAMES, node=node).SerializeToString())
    again = _same(_request(NAMES, response_nonce="8").SerializeToString())
    nack = _same(
        _request(NAMES, error_detail=status_pb2.Status(code=3, message="bad")).SerializeToString()
    )
    assert first is again is nack


def test_another_middle_with_the_same_length_and_ending_is_not_taken_for_a_known_one() -> None:
    _same(_request(NAMES).SerializeToString())
    swapped = [NAMES[1], NAMES[0], *NAMES[2:]]  # same length, same last bytes
    assert _same(_request(swapped).SerializeToString()) == frozenset(swapped)
    fewer = [*NAMES[:-1], "outbound|8080|v1|svc-99999.default.svc.cluster.local"]
    assert _same(_request(fewer).SerializeToString()) == frozenset(fewer)


def test_names_that_look_like_the_trailing_fields_do_not_confuse_it() -> None:
    trailer = _request([]).SerializeToString()
    tricky = [*NAMES[:200], trailer.decode("latin-1"), f"x{CLUSTER}", *NAMES[200:]]
    for _ in range(2):
        assert _same(_request(tricky).SerializeToString()) == frozenset(tricky)


def test_fields_in_another_order_are_read_right() -> None:
    head = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, response_nonce="3")
    body = discovery_pb2.DiscoveryRequest(resource_names=NAMES, version_info="v2")
    raw = head.SerializeToString() + body.SerializeToString()  # type URL first
    for _ in range(2):
        assert _same(raw) == frozenset(NAMES)


def test_random_requests_read_as_full_parses() -> None:
    rng = random.Random(7)
    subsets = [sorted(rng.sample(NAMES, k)) for k in (10, 50, 399, 400)]
    for _ in range(200):
        names = rng.choice(subsets)
        if rng.random() < 0.2:
            names = [*names, rng.choice(NAMES) + "-new"]
        fields: dict[str, object] = {"response_nonce": str(rng.randrange(100))}
        if rng.random() < 0.3:
            fields["node"] = base_pb2.Node(id=f"n{rng.randrange(5)}.default")
        if rng.random() < 0.2:
            fields["error_detail"] = status_pb2.Status(message="nack")
        _same(_request(names, **fields).SerializeToString())


def test_a_nack_with_a_long_message_reads_right() -> None:
    _same(_request(NAMES).SerializeToString())
    long_error = status_pb2.Status(code=3, message="bad cluster: " + "x" * 10_000)
    assert _same(_request(NAMES, error_detail=long_error).SerializeToString()) == frozenset(NAMES)


# -- what the sharing may hold -------------------------------------------------


def test_a_set_and_its_encoding_go_with_the_last_request_that_holds_them() -> None:
    names = [f"gone-{i:05d}.default.svc.cluster.local" for i in range(300)]
    raw = _request(names).SerializeToString()
    entries, encoded = len(requests.SHARED), requests.SHARED.encoded_bytes
    first = parse_sotw_request(raw)
    again = parse_sotw_request(raw)  # read in place: the encoding was remembered
    assert again.names is first.names
    assert len(requests.SHARED) == entries + 1
    assert requests.SHARED.encoded_bytes > encoded
    del first, again  # no stream subscribes to these names any more
    gc.collect()
    assert len(requests.SHARED) == entries
    assert requests.SHARED.encoded_bytes == encoded


def test_encodings_are_kept_within_their_byte_budget() -> None:
    shared = requests.NameSets(entries=100, entry_bytes=3000, total_bytes=10_000)
    held = []
    for i in range(10):
        names = frozenset(f"set{i}-{j}" for j in range(100))
        held.append(shared.intern(names))
        shared.remember_encoding(held[-1], (i, b"key"), b"x" * 2000)
        assert shared.encoded_bytes <= 10_000
    assert shared.by_encoding((9, b"key")) is not None  # the most recent stay
    assert shared.by_encoding((0, b"key")) is None  # the oldest went
    shared.remember_encoding(held[0], (0, b"big"), b"x" * 3001)  # over the entry budget
    assert shared.by_encoding((0, b"big")) is None


def test_distinct_sets_are_bounded_in_count_and_size() -> None:
    shared = requests.NameSets(entries=4, entry_names=50)
    held = [shared.intern(frozenset(f"s{i}-{j}" for j in range(10))) for i in range(6)]
    assert len(shared) == 4
    big = frozenset(str(j) for j in range(51))
    assert shared.intern(big) is big and len(shared) == 4  # too large to share
    assert shared.intern(frozenset(held[5])) is held[5]  # the recent ones are shared


def test_too_many_names_are_refused_before_any_set_is_built() -> None:
    names = [f"many-{i}" for i in range(101)]
    entries = len(requests.SHARED)
    with pytest.raises(LimitExceeded, match="101 resource names in one request; at most 100"):
        parse_sotw_request(_request(names).SerializeToString(), max_names=100)
    assert len(requests.SHARED) == entries


def test_the_node_is_read_without_the_names() -> None:
    node = base_pb2.Node(id="a.default", cluster="a")
    parse = discovery_pb2.DiscoveryRequest.FromString
    envoy_order = _request(NAMES, node=node).SerializeToString()
    assert first_node(envoy_order, 2, parse) == node
    other_order = (
        discovery_pb2.DiscoveryRequest(resource_names=NAMES).SerializeToString()
        + discovery_pb2.DiscoveryRequest(node=node).SerializeToString()
    )
    assert first_node(other_order, 2, parse) == node
    assert first_node(_request(NAMES).SerializeToString(), 2, parse).id == ""
    delta = discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=ENDPOINT).SerializeToString()
    assert first_node(delta, 1, discovery_pb2.DeltaDiscoveryRequest.FromString) == node
    with pytest.raises(DecodeError):
        first_node(b"\x12\xff\xff\xff", 2, parse)


# -- delta requests: the subscription, read the same way -------------------------


def _delta_same(raw: bytes) -> frozenset[str]:
    """Parse ``raw`` as a delta request; assert it reads exactly as a full
    parse; return the subscribed names."""
    got = parse_delta_request(raw)
    full = discovery_pb2.DeltaDiscoveryRequest.FromString(raw)
    assert got.subscribe == frozenset(full.resource_names_subscribe)
    assert got.type_url == full.type_url
    field = "resource_names_subscribe"
    assert _without(got.message, field) == _without(full, field)
    return got.subscribe


def _delta(names: list[str], **fields: object) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_subscribe=names, **fields
    )


def test_delta_subscriptions_with_the_same_names_share_one_set_in_place() -> None:
    names = [f"delta-{i:05d}.default.svc.cluster.local" for i in range(300)]
    node = base_pb2.Node(id="a.default")
    first = _delta_same(_delta(names, node=node).SerializeToString())
    shared_bytes = requests.SHARED.encoded_bytes
    other_stream = _delta(names, node=base_pb2.Node(id="b.default")).SerializeToString()
    assert _delta_same(other_stream) is first
    in_place = parse_delta_request(other_stream)
    assert in_place.subscribe is first
    assert not in_place.message.resource_names_subscribe  # the names were never parsed
    assert requests.SHARED.encoded_bytes == shared_bytes
    # A SotW request of the same names finds the same set: the same field 3.
    assert _same(_request(names).SerializeToString()) is first


def test_delta_requests_with_more_than_the_names_read_as_full_parses() -> None:
    _delta_same(_delta(NAMES).SerializeToString())  # the names' bytes are now known
    unsubscribe = _delta(NAMES, resource_names_unsubscribe=["old"]).SerializeToString()
    assert _delta_same(unsubscribe) == frozenset(NAMES)
    versions = _delta(NAMES, initial_resource_versions={"a": "1"}).SerializeToString()
    assert _delta_same(versions) == frozenset(NAMES)
    nonce_after = (
        _delta(NAMES).SerializeToString() + _delta([], response_nonce="4").SerializeToString()
    )
    assert _delta_same(nonce_after) == frozenset(NAMES)
    names_twice = _delta(NAMES).SerializeToString() + _delta(NAMES[:3]).SerializeToString()
    assert _delta_same(names_twice) == frozenset(NAMES)
    more = _delta([*NAMES, "extra"]).SerializeToString()
    assert _delta_same(more) == frozenset([*NAMES, "extra"])


def test_too_many_delta_names_are_refused() -> None:
    names = [f"many-{i}" for i in range(101)]
    for fields in (
        {"resource_names_subscribe": names},
        {"resource_names_unsubscribe": names},
        {"initial_resource_versions": dict.fromkeys(names, "1")},
    ):
        raw = discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, **fields).SerializeToString()
        with pytest.raises(LimitExceeded, match=r"101 .* in one request; at most 100"):
            parse_delta_request(raw, max_names=100)
    known = _delta(NAMES).SerializeToString()
    _delta_same(known)
    with pytest.raises(LimitExceeded):  # also when the names are found by their bytes
        parse_delta_request(known, max_names=399)
