"""The bytes of xDS responses that sailplane writes by hand, once per
resource, so that a response is a concatenation of shared pieces.

Protobuf fields may appear in any order and repeated fields concatenate, so
``header + chunks + nonce`` is a valid ``DiscoveryResponse``. A *chunk* is one
encoded ``DiscoveryResponse.resources`` entry (an ``Any``); for delta xDS,
:func:`delta_entry` wraps a chunk into a ``DeltaDiscoveryResponse.resources``
entry (``Resource{version, name, resource}``) without re-encoding it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from sailplane.xds.types import SHORT_NAMES
from sailplane.xds.wire import varint

RESOURCES_FIELD_TAG = b"\x12"  # DiscoveryResponse.resources: field 2, length-delimited
# Resource.version (1) and Resource.name (3), both strings. Resource.resource is
# field 2, an Any: the same tag as DiscoveryResponse.resources, so a SotW chunk
# *is* the encoded `resource` field of a delta Resource.
_VERSION_TAG, _NAME_TAG = b"\x0a", b"\x1a"


def _type_url_field(type_url: str) -> bytes:
    """``Any.type_url`` (field 1), encoded."""
    encoded = type_url.encode()
    return b"\x0a" + varint(len(encoded)) + encoded


# The type URLs sailplane serves, their Any.type_url field encoded once.
_TYPE_URL_FIELDS: Mapping[str, bytes] = {t: _type_url_field(t) for t in SHORT_NAMES}


def chunk(type_url: str, value: bytes) -> bytes:
    """``resources`` entry: the Any ``{type_url, value}``, as its serialiser
    writes it (field 1, then field 2, omitted when empty), without building it."""
    type_field = _TYPE_URL_FIELDS.get(type_url) or _type_url_field(type_url)
    value_field = b"\x12" + varint(len(value)) if value else b""
    size = len(type_field) + len(value_field) + len(value)
    return b"".join([RESOURCES_FIELD_TAG, varint(size), type_field, value_field, value])


def payload(encoded: bytes) -> bytes:
    """The Any inside a ``resources`` chunk (tag, varint length, payload)."""
    start = 1
    while encoded[start] & 0x80:
        start += 1
    return encoded[start + 1 :]


def content_version(chunks: Mapping[str, bytes]) -> str:
    """A hash of names and bytes in name order: equal content, equal version,
    however the resources were produced."""
    digest = hashlib.sha256()
    for name in sorted(chunks):
        digest.update(name.encode() + b"\0")
        digest.update(payload(chunks[name]))
    return digest.hexdigest()[:16]


def resource_version(encoded: bytes) -> str:
    """One resource's version (delta xDS): a hash of its chunk."""
    return hashlib.sha256(encoded).hexdigest()[:12]


def delta_entry(name: str, version: str, encoded: bytes) -> bytes:
    """``DeltaDiscoveryResponse.resources`` entry around the chunk ``encoded``."""
    encoded_name = name.encode()
    resource = b"".join(
        [
            _VERSION_TAG,
            varint(len(version)),
            version.encode(),
            _NAME_TAG,
            varint(len(encoded_name)),
            encoded_name,
            encoded,
        ]
    )
    return RESOURCES_FIELD_TAG + varint(len(resource)) + resource


# The nonce: field 5 of both DiscoveryResponse and DeltaDiscoveryResponse.
_NONCE_TAG = b"\x2a"


def encode_nonce(nonce: str) -> bytes:
    """The ``nonce`` field (omitted when empty, as the serialiser does);
    written once per response, so by hand, not through a message."""
    if not nonce:
        return b""
    encoded = nonce.encode()
    return _NONCE_TAG + varint(len(encoded)) + encoded


__all__ = [
    "chunk",
    "content_version",
    "delta_entry",
    "encode_nonce",
    "payload",
    "resource_version",
]
