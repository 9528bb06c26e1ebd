"""Generic Token Batch Issuance: the wire format of draft-ietf-privacypass-batched-tokens §5.

Pure: frozen values with `from_bytes` / `to_bytes` that are exact inverses. Followed text: the
draft's repository at its draft-07 state (the -08 text carries the same change log and wire
format; -09 could not be read in full here). Only the *generic* variant applies to token type
0x0002; the amortized variant (§4) is for VOPRF types 0x0001 / 0x0005, which hushcc never issues.

    struct { uint16_t token_type; TokenRequest token_request; } GenericTokenRequest;
    struct { GenericTokenRequest generic_token_requests<V>; } GenericBatchTokenRequest;
    struct { uint16_t token_type; TokenResponse token_response; } GenericTokenResponse;
    struct { optional<GenericTokenResponse> generic_token_response; } OptionalTokenResponse;
    struct { OptionalTokenResponse optional_token_responses<V>; } GenericBatchTokenResponse;

Invariants (as the draft's test vectors encode them):
* A GenericTokenRequest *is* the RFC 9578 TokenRequest of its type: that struct already opens
  with its uint16 token_type, which is the one the draft names (not repeated). A
  GenericTokenResponse is the uint16 token_type followed by the type's TokenResponse.
* `<V>` is a vector whose length in bytes is a QUIC variable-length integer (RFC 9000 §16) in
  its shortest form; a longer-than-needed encoding is malformed (draft §3.2).
* An element's size follows from its token type, so a type whose sizes are not known here
  (not 0x0001, 0x0002 or 0x0005) makes the whole message unparseable: `ProtocolError`, which
  the issuer answers with 422 (draft §5.2). A presence octet other than 0 or 1 is malformed.
* Nothing is accepted after the outer vector.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hushcc.errors import ProtocolError

GENERIC_BATCH_REQUEST_MEDIA_TYPE = "application/private-token-generic-batch-request"
GENERIC_BATCH_RESPONSE_MEDIA_TYPE = "application/private-token-generic-batch-response"

# TokenRequest = token_type(2) + truncated_token_key_id(1) + blinded element / message;
# TokenResponse = evaluated element + DLEQ proof (VOPRF types) or the blind signature (type 2).
REQUEST_SIZES = {0x0001: 3 + 49, 0x0002: 3 + 256, 0x0005: 3 + 32}  # RFC 9578 §5.1, §6.1; §4
RESPONSE_SIZES = {0x0001: 49 + 2 * 48, 0x0002: 256, 0x0005: 32 + 2 * 32}  # RFC 9578 §5.2, §6.2
VARINT_MAX = (1 << 62) - 1
MAX_BATCH = 64  # requests hushcc's issuer signs per batch and its client puts in one (§7.2)


def encode_varint(value: int) -> bytes:
    """The shortest RFC 9000 §16 encoding of `value`.

    Raises:
        ProtocolError: negative or above 2^62 - 1.
    """
    if not 0 <= value <= VARINT_MAX:
        raise ProtocolError("varint out of range")
    for prefix, size in ((0, 1), (1, 2), (2, 4), (3, 8)):
        if value < 1 << (8 * size - 2):
            raw = value.to_bytes(size, "big")
            return bytes([raw[0] | prefix << 6]) + raw[1:]
    raise AssertionError  # unreachable: VARINT_MAX fits in 8 bytes


def decode_varint(data: bytes, offset: int) -> tuple[int, int]:
    """Read a minimally encoded varint at `offset`; return (value, offset after it).

    Raises:
        ProtocolError: truncated, or longer than the value needs.
    """
    if offset >= len(data):
        raise ProtocolError("truncated varint")
    size = 1 << (data[offset] >> 6)
    if offset + size > len(data):
        raise ProtocolError("truncated varint")
    value = int.from_bytes(data[offset:offset + size], "big") & ((1 << (8 * size - 2)) - 1)
    if size > 1 and value < 1 << (8 * (size // 2) - 2):
        raise ProtocolError("varint not in its shortest encoding")
    return value, offset + size


def _vector(data: bytes) -> bytes:
    """The content of the one `<V>` vector that must make up all of `data`."""
    length, offset = decode_varint(data, 0)
    if offset + length != len(data):
        raise ProtocolError("batch vector length does not match the message")
    return data[offset:]


def _token_type(data: bytes, offset: int) -> int:
    if offset + 2 > len(data):
        raise ProtocolError("truncated token_type")
    (token_type,) = struct.unpack_from("!H", data, offset)
    return int(token_type)


@dataclass(frozen=True, slots=True)
class GenericTokenRequest:
    """One request of a batch: the whole RFC 9578 TokenRequest of `token_type`."""

    token_request: bytes

    def __post_init__(self) -> None:
        """The request must have its type's size.

        Raises:
            ProtocolError: unknown type or wrong size.
        """
        size = REQUEST_SIZES.get(_token_type(self.token_request, 0))
        if size is None:
            raise ProtocolError("unknown token type in batch")
        if len(self.token_request) != size:
            raise ProtocolError("TokenRequest in batch has the wrong size")

    @property
    def token_type(self) -> int:
        """The request's token type (its first two bytes)."""
        return _token_type(self.token_request, 0)


@dataclass(frozen=True, slots=True)
class GenericBatchTokenRequest:
    """GenericBatchTokenRequest: the client's requests, in order."""

    requests: tuple[GenericTokenRequest, ...]

    def to_bytes(self) -> bytes:
        """Encode the batch."""
        body = b"".join(r.token_request for r in self.requests)
        return encode_varint(len(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> GenericBatchTokenRequest:
        """Decode a batch (the issuer answers 422 to a `ProtocolError`).

        Raises:
            ProtocolError: bad vector length, unknown token type, truncated element.
        """
        body = _vector(data)
        requests, offset = [], 0
        while offset < len(body):
            size = REQUEST_SIZES.get(_token_type(body, offset))
            if size is None:
                raise ProtocolError("unknown token type in batch")
            if offset + size > len(body):
                raise ProtocolError("truncated TokenRequest in batch")
            requests.append(GenericTokenRequest(body[offset:offset + size]))
            offset += size
        return cls(tuple(requests))


@dataclass(frozen=True, slots=True)
class GenericTokenResponse:
    """One issued answer: its token type and that type's TokenResponse."""

    token_type: int
    token_response: bytes

    def __post_init__(self) -> None:
        """The response must have its type's size.

        Raises:
            ProtocolError: unknown type or wrong size.
        """
        size = RESPONSE_SIZES.get(self.token_type)
        if size is None:
            raise ProtocolError("unknown token type in batch response")
        if len(self.token_response) != size:
            raise ProtocolError("TokenResponse in batch has the wrong size")


@dataclass(frozen=True, slots=True)
class GenericBatchTokenResponse:
    """GenericBatchTokenResponse: one optional answer per request, in the requests' order."""

    responses: tuple[GenericTokenResponse | None, ...]

    def to_bytes(self) -> bytes:
        """Encode the batch answer (absent = presence octet 0)."""
        parts = [b"\x00" if r is None else b"\x01" + struct.pack("!H", r.token_type)
                 + r.token_response for r in self.responses]
        body = b"".join(parts)
        return encode_varint(len(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> GenericBatchTokenResponse:
        """Decode a batch answer.

        Raises:
            ProtocolError: bad vector length, presence octet not 0/1, unknown token type,
                truncated element.
        """
        body = _vector(data)
        responses: list[GenericTokenResponse | None] = []
        offset = 0
        while offset < len(body):
            present, offset = body[offset], offset + 1
            if present == 0:
                responses.append(None)
                continue
            if present != 1:
                raise ProtocolError("optional presence octet is neither 0 nor 1")
            token_type = _token_type(body, offset)
            size = RESPONSE_SIZES.get(token_type)
            if size is None:
                raise ProtocolError("unknown token type in batch response")
            offset += 2
            if offset + size > len(body):
                raise ProtocolError("truncated TokenResponse in batch")
            responses.append(GenericTokenResponse(token_type, body[offset:offset + size]))
            offset += size
        return cls(tuple(responses))
