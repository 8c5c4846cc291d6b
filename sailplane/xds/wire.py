"""Protobuf wire format, the little of it that lets resources be assembled
from pre-encoded parts instead of being serialised whole.

A message is a sequence of ``(tag, value)`` fields; a repeated message field
is one such field per element, and a deterministic serialiser writes fields
in field-number order. So a message with a large repeated field can be
written as: the other fields numbered below it, the elements (each encoded
once and kept), the other fields numbered above it. The bytes are exactly
what ``SerializeToString(deterministic=True)`` gives for the whole message.
"""

from __future__ import annotations

from collections.abc import Iterable

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _field_end(data: bytes, pos: int, wire_type: int) -> int:
    if wire_type == 0:
        return read_varint(data, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == _LENGTH_DELIMITED:
        length, pos = read_varint(data, pos)
        return pos + length
    if wire_type == 5:
        return pos + 4
    raise ValueError(f"unsupported wire type {wire_type}")


def field_end(data: bytes, pos: int, wire_type: int) -> int:
    """Where a field whose value starts at ``pos`` ends."""
    return _field_end(data, pos, wire_type)


def field_entry(field_number: int, value: bytes) -> bytes:
    """One length-delimited field: tag, length, bytes (an encoded submessage)."""
    return varint(field_number << 3 | _LENGTH_DELIMITED) + varint(len(value)) + value


def splice_repeated(shell: bytes, field_number: int, entries: Iterable[bytes]) -> bytes:
    """``shell`` (a deterministically serialised message whose repeated field
    ``field_number`` is empty) with ``entries`` (each a complete
    :func:`field_entry`) put where that field belongs."""
    pos = 0
    while pos < len(shell):
        tag, value_at = read_varint(shell, pos)
        if tag >> 3 > field_number:
            break
        pos = _field_end(shell, value_at, tag & 7)
    return b"".join([shell[:pos], *entries, shell[pos:]])
