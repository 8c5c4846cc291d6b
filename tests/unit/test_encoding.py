"""The bytes written by hand in xds/encoding.py are the serialiser's bytes."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from sailplane.xds.encoding import encode_nonce


@pytest.mark.parametrize("nonce", ["", "1", "12345", "n" * 127, "n" * 128, "é" * 300])
def test_a_nonce_is_encoded_as_both_responses_encode_it(nonce: str) -> None:
    for message in (discovery_pb2.DiscoveryResponse, discovery_pb2.DeltaDiscoveryResponse):
        assert encode_nonce(nonce) == message(nonce=nonce).SerializeToString()
        assert message.FromString(b"\x0a\x011" + encode_nonce(nonce)).nonce == nonce
