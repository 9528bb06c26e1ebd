"""The plaintext request header of RFC 9458 §4.3, the HPKE `info` it feeds, and the OHTTP labels.

Pure, and below both `keyconfig` and `encapsulation` (which import it; it imports neither), so
the key configuration can build headers and the gateway key can build `info` without a cycle.

Invariants:
* `RequestHeader.from_bytes(h.to_bytes()) == h`; the header is exactly `HEADER_LENGTH` bytes.
* `info = label || 0x00 || header`: the header is authenticated as part of the HPKE context.
* The labels are those of RFC 9458 §4.3/§4.4 and chunked OHTTP (draft-08 §5/§6); a gateway key
  decapsulates under `OHTTP_REQUEST_LABELS` only (SECURITY.md G13).
"""

from __future__ import annotations

from dataclasses import dataclass

from hushcc.errors import DecryptError

HEADER_LENGTH = 7
REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"
CHUNKED_REQUEST_LABEL = b"message/bhttp chunked request"
CHUNKED_RESPONSE_LABEL = b"message/bhttp chunked response"
# The HPKE `info` labels a gateway key may decapsulate under.
OHTTP_REQUEST_LABELS = frozenset({REQUEST_LABEL, CHUNKED_REQUEST_LABEL})


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The plaintext header of an Encapsulated Request: `key_id, kem_id, kdf_id, aead_id`."""

    key_id: int
    kem_id: int
    kdf_id: int
    aead_id: int

    @classmethod
    def from_bytes(cls, data: bytes) -> RequestHeader:
        """Parse the first 7 bytes.

        Raises:
            DecryptError: fewer than 7 bytes (a short request is an opaque failure, G8).
        """
        if len(data) < HEADER_LENGTH:
            raise DecryptError
        return cls(
            data[0],
            int.from_bytes(data[1:3], "big"),
            int.from_bytes(data[3:5], "big"),
            int.from_bytes(data[5:7], "big"),
        )

    def to_bytes(self) -> bytes:
        """The 7 header bytes."""
        return (
            bytes([self.key_id])
            + self.kem_id.to_bytes(2, "big")
            + self.kdf_id.to_bytes(2, "big")
            + self.aead_id.to_bytes(2, "big")
        )


def build_info(label: bytes, header: bytes) -> bytes:
    """HPKE `info` = label || 0x00 || header (RFC 9458 §4.3)."""
    return label + b"\x00" + header
