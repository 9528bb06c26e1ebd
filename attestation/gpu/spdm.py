"""NVIDIA H100 GPU evidence: the SPDM 1.1 GET_MEASUREMENTS request ‖ MEASUREMENTS response.

This is the exact byte format NVML's `nvmlDeviceGetConfComputeGpuAttestationReport` returns and
that NVIDIA's local verifier parses (DSP0274 1.1 §10.11, NVIDIA opaque data fields):

* request (37 bytes): version 0x11, code 0xE0, param1 0x01 (signature requested), param2 0xFF
  (all blocks), nonce (32), slot id (1);
* response: version 0x11, code 0x60, param1, param2, NumberOfBlocks (1), MeasurementRecordLength
  (3, LE), measurement record (blocks: index (1), spec (1), size (2 LE), DMTF type (1), value size
  (2 LE), value), responder nonce (32), OpaqueLength (2 LE), opaque data (TLVs: type u16 LE,
  length u16 LE, value), signature (96: raw P-384 r ‖ s).
* The signature is ECDSA P-384 / SHA-384 over request ‖ response-without-signature, by the key of
  the first certificate of the device chain.

Invariants: pure (bytes in, frozen values out); `GpuEvidence.from_bytes(b).to_bytes() == b`;
any malformed input raises `ProtocolError` (never IndexError/struct.error); nothing here trusts
a key — `verify_signature` takes the public key the chain verifier vouched for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Mapping

SPDM_VERSION_1_1 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
NONCE_SIZE = 32
REQUEST_SIZE = 4 + NONCE_SIZE + 1
SIGNATURE_SIZE = 96  # raw P-384 r || s
DMTF_MEASUREMENT_SPEC = 0x01

# NVIDIA opaque field ids (nvtrust `OpaqueDataParser`); only the ones we read are named.
OPAQUE_DRIVER_VERSION = 3
OPAQUE_VBIOS_VERSION = 6
OPAQUE_FWID = 20
OPAQUE_NAMES: Mapping[int, str] = MappingProxyType(
    {
        3: "DRIVER_VERSION",
        4: "GPU_INFO",
        6: "VBIOS_VERSION",
        12: "MSRSCNT",
        14: "BOARD_ID",
        15: "CHIP_SKU",
        17: "PROJECT",
        18: "PROJECT_SKU",
        20: "FWID",
        21: "PROTECTED_PCIE_STATUS",
    }
)


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    """One DMTF measurement block: index, DMTF value type and the digest value."""

    index: int
    spec: int
    value_type: int
    value: bytes

    def to_bytes(self) -> bytes:
        """Encode as index ‖ spec ‖ size ‖ type ‖ value size ‖ value."""
        dmtf = struct.pack("<BH", self.value_type, len(self.value)) + self.value
        return struct.pack("<BBH", self.index, self.spec, len(dmtf)) + dmtf


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    """A parsed SPDM GET_MEASUREMENTS request ‖ signed MEASUREMENTS response."""

    request: bytes
    request_nonce: bytes
    slot: int
    response_header: bytes  # version, code, param1, param2
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: tuple[tuple[int, bytes], ...]
    signature: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> GpuEvidence:
        """Parse request ‖ response, validating every length and fixed field.

        Args:
            data: The raw evidence bytes.

        Returns:
            The parsed evidence.

        Raises:
            ProtocolError: On any malformed, truncated or trailing data.
        """
        if len(data) < REQUEST_SIZE + 8 + NONCE_SIZE + 2 + SIGNATURE_SIZE:
            raise ProtocolError("gpu evidence: too short")
        req = bytes(data[:REQUEST_SIZE])
        if req[0] != SPDM_VERSION_1_1 or req[1] != GET_MEASUREMENTS:
            raise ProtocolError("gpu evidence: request is not SPDM 1.1 GET_MEASUREMENTS")
        if req[2] & 0x01 != 0x01:
            raise ProtocolError("gpu evidence: request did not ask for a signature")
        resp = memoryview(data)[REQUEST_SIZE:]
        if resp[0] != SPDM_VERSION_1_1 or resp[1] != MEASUREMENTS:
            raise ProtocolError("gpu evidence: response is not SPDM 1.1 MEASUREMENTS")
        n_blocks = resp[4]
        record_len = int.from_bytes(resp[5:8], "little")
        end_record = 8 + record_len
        blocks = _parse_record(bytes(resp[8:end_record]), n_blocks, len(resp) - end_record)
        pos = end_record
        responder_nonce = bytes(resp[pos : pos + NONCE_SIZE])
        pos += NONCE_SIZE
        if len(resp) < pos + 2:
            raise ProtocolError("gpu evidence: truncated opaque length")
        opaque_len = int.from_bytes(resp[pos : pos + 2], "little")
        pos += 2
        opaque = _parse_opaque(bytes(resp[pos : pos + opaque_len]), opaque_len)
        pos += opaque_len
        if len(resp) - pos != SIGNATURE_SIZE:
            raise ProtocolError("gpu evidence: signature is not 96 bytes at the end")
        return cls(
            request=req,
            request_nonce=req[4 : 4 + NONCE_SIZE],
            slot=req[4 + NONCE_SIZE],
            response_header=bytes(resp[:4]),
            blocks=blocks,
            responder_nonce=responder_nonce,
            opaque=opaque,
            signature=bytes(resp[pos:]),
        )

    def signed_bytes(self) -> bytes:
        """Return request ‖ response without the signature: what the device signed."""
        record = b"".join(b.to_bytes() for b in self.blocks)
        opaque = b"".join(struct.pack("<HH", t, len(v)) + v for t, v in self.opaque)
        return b"".join(
            [
                self.request,
                self.response_header,
                bytes([len(self.blocks)]),
                len(record).to_bytes(3, "little"),
                record,
                self.responder_nonce,
                struct.pack("<H", len(opaque)),
                opaque,
            ]
        )

    def to_bytes(self) -> bytes:
        """Encode back to the exact evidence bytes (inverse of `from_bytes`)."""
        return self.signed_bytes() + self.signature

    @property
    def measurements(self) -> Mapping[int, bytes]:
        """Measurement values by SPDM block index."""
        return MappingProxyType({b.index: b.value for b in self.blocks})

    def opaque_field(self, field_type: int) -> bytes | None:
        """The value of the first opaque field of `field_type`, or None."""
        return next((v for t, v in self.opaque if t == field_type), None)

    @property
    def driver_version(self) -> str | None:
        """The driver version string the GPU firmware reports (opaque field 3)."""
        raw = self.opaque_field(OPAQUE_DRIVER_VERSION)
        return None if raw is None else raw.rstrip(b"\x00").decode("ascii", "replace")

    @property
    def vbios_version(self) -> str | None:
        """The VBIOS version as NVIDIA prints it: b[3].b[2].b[1].b[0].b[4] in lowercase hex."""
        raw = self.opaque_field(OPAQUE_VBIOS_VERSION)
        if raw is None or len(raw) < 5:
            return None
        return ".".join(f"{raw[i]:02x}" for i in (3, 2, 1, 0, 4))


def _parse_record(record: bytes, n_blocks: int, remaining: int) -> tuple[MeasurementBlock, ...]:
    if remaining < 0:
        raise ProtocolError("gpu evidence: measurement record overruns the response")
    blocks: list[MeasurementBlock] = []
    pos = 0
    for _ in range(n_blocks):
        if len(record) - pos < 7:
            raise ProtocolError("gpu evidence: truncated measurement block")
        index, spec, size = struct.unpack_from("<BBH", record, pos)
        value_type, value_size = struct.unpack_from("<BH", record, pos + 4)
        if spec != DMTF_MEASUREMENT_SPEC or size != 3 + value_size:
            raise ProtocolError("gpu evidence: measurement block is not a DMTF block")
        if len(record) - pos - 7 < value_size:
            raise ProtocolError("gpu evidence: truncated measurement value")
        blocks.append(
            MeasurementBlock(index, spec, value_type, record[pos + 7 : pos + 7 + value_size])
        )
        pos += 4 + size
    if pos != len(record):
        raise ProtocolError("gpu evidence: measurement record length mismatch")
    if len({b.index for b in blocks}) != len(blocks):
        raise ProtocolError("gpu evidence: duplicate measurement index")
    return tuple(blocks)


def _parse_opaque(opaque: bytes, declared: int) -> tuple[tuple[int, bytes], ...]:
    if len(opaque) != declared:
        raise ProtocolError("gpu evidence: truncated opaque data")
    fields: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(opaque):
        if len(opaque) - pos < 4:
            raise ProtocolError("gpu evidence: truncated opaque field header")
        field_type, size = struct.unpack_from("<HH", opaque, pos)
        if len(opaque) - pos - 4 < size:
            raise ProtocolError("gpu evidence: truncated opaque field")
        fields.append((field_type, opaque[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return tuple(fields)


def verify_signature(evidence: GpuEvidence, key: ec.EllipticCurvePublicKey) -> None:
    """Verify the response signature (ECDSA P-384 / SHA-384 over request ‖ unsigned response).

    Args:
        evidence: Parsed evidence.
        key: The attestation key from the verified device certificate chain (P-384).

    Raises:
        VerificationError: The key is not P-384 or the signature does not verify.
    """
    if not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("gpu attestation key is not P-384")
    r = int.from_bytes(evidence.signature[:48], "big")
    s = int.from_bytes(evidence.signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), evidence.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise VerificationError("gpu evidence signature does not verify") from exc


def build_evidence(
    *,
    nonce: bytes,
    blocks: tuple[MeasurementBlock, ...],
    responder_nonce: bytes,
    opaque: tuple[tuple[int, bytes], ...],
    sign: ec.EllipticCurvePrivateKey,
) -> bytes:
    """Assemble signed evidence in the H100 format (used by the simulated GPU).

    Args:
        nonce: The 32-byte requester nonce.
        blocks: Measurement blocks.
        responder_nonce: 32 random bytes from the responder.
        opaque: Opaque (type, value) fields.
        sign: A `ec.EllipticCurvePrivateKey` (P-384) that signs the unsigned bytes.

    Returns:
        request ‖ response ‖ signature.

    Raises:
        ProtocolError: Nonce sizes are wrong.
    """
    if len(nonce) != NONCE_SIZE or len(responder_nonce) != NONCE_SIZE:
        raise ProtocolError("gpu evidence: nonces must be 32 bytes")
    unsigned = GpuEvidence(
        request=bytes([SPDM_VERSION_1_1, GET_MEASUREMENTS, 0x01, 0xFF]) + nonce + b"\x00",
        request_nonce=nonce,
        slot=0,
        response_header=bytes([SPDM_VERSION_1_1, MEASUREMENTS, 0, 0]),
        blocks=blocks,
        responder_nonce=responder_nonce,
        opaque=opaque,
        signature=b"",
    )
    der = sign.sign(unsigned.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return unsigned.signed_bytes() + r.to_bytes(48, "big") + s.to_bytes(48, "big")
