"""QUIC variable-length integers (RFC 9000 §16), the integer encoding of RFC 9292 and chunked OHTTP.

Pure. Decoding never raises on short input: it reports "need more bytes" by returning `None`, so
incremental decoders can wait for the next piece; malformed input cannot exist (every prefix is a
valid length class). Encoding uses the shortest form; decoders accept any form (RFC 9292 §3.1
lets senders pick the length, and chunked OHTTP does not authenticate the choice).
"""

from __future__ import annotations

from hushcc.errors import ProtocolError

MAX_VARINT = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    """Encode `value` as the shortest QUIC variable-length integer.

    Args:
        value: an integer in [0, 2^62).

    Returns:
        1, 2, 4 or 8 bytes.

    Raises:
        ProtocolError: `value` is negative or too large to encode.
    """
    if value < 0 or value > MAX_VARINT:
        raise ProtocolError("integer out of range for a variable-length integer")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode one variable-length integer at `offset`.

    Args:
        data: the buffer.
        offset: where the integer starts.

    Returns:
        `(value, next_offset)`, or `None` if `data` ends before the integer does.
    """
    if offset >= len(data):
        return None
    first = data[offset]
    length = 1 << (first >> 6)
    end = offset + length
    if end > len(data):
        return None
    value = first & 0x3F
    for byte in data[offset + 1 : end]:
        value = (value << 8) | byte
    return value, end
