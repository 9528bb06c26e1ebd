"""The SEV-SNP ATTESTATION_REPORT format (AMD SEV-SNP ABI spec, Table "ATTESTATION_REPORT").

One layout covers the report versions in the field: 2 (ABI 1.51+), 3 (adds CPUID family, model,
stepping at 0x188) and 5 (adds the launch/current mitigation vectors at 0x1F8/0x200). Fields a
version does not define are reserved there and must be zero, as must every reserved range, so
`SnpReport.from_bytes(b).to_bytes() == b` for every report that parses.

The signature (ECDSA P-384 with SHA-384, signature_algo 1) covers bytes [0x000, 0x2A0); r and s
are 72-byte little-endian fields at 0x2A0 and 0x2E8.

Invariants: pure; malformed input raises `ProtocolError` and nothing else.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from hushcc.errors import ProtocolError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = frozenset({2, 3, 5})
SIG_ALGO_ECDSA_P384_SHA384 = 1
POLICY_DEBUG_BIT = 1 << 19
POLICY_RESERVED_ONE_BIT = 1 << 17
FLAGS_MASK_CHIP_ID = 1 << 1
_COMPONENT_LEN = 72

# (name, offset, size); ints are little-endian, sizes 1/4/8 are ints, the rest bytes.
_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("version", 0x000, 4), ("guest_svn", 0x004, 4), ("policy", 0x008, 8),
    ("family_id", 0x010, 16), ("image_id", 0x020, 16), ("vmpl", 0x030, 4),
    ("signature_algo", 0x034, 4), ("current_tcb", 0x038, 8), ("platform_info", 0x040, 8),
    ("flags", 0x048, 4), ("report_data", 0x050, 64), ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32), ("id_key_digest", 0x0E0, 48), ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32), ("report_id_ma", 0x160, 32), ("reported_tcb", 0x180, 8),
    ("cpuid_fam_id", 0x188, 1), ("cpuid_mod_id", 0x189, 1), ("cpuid_step", 0x18A, 1),
    ("chip_id", 0x1A0, 64), ("committed_tcb", 0x1E0, 8), ("current_build", 0x1E8, 1),
    ("current_minor", 0x1E9, 1), ("current_major", 0x1EA, 1), ("committed_build", 0x1EC, 1),
    ("committed_minor", 0x1ED, 1), ("committed_major", 0x1EE, 1), ("launch_tcb", 0x1F0, 8),
    ("launch_mit_vector", 0x1F8, 8), ("current_mit_vector", 0x200, 8),
    ("signature_r", 0x2A0, _COMPONENT_LEN), ("signature_s", 0x2E8, _COMPONENT_LEN),
)
_INT_SIZES = {1: "<B", 4: "<I", 8: "<Q"}
_V3_FIELDS = ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")
_V5_FIELDS = ("launch_mit_vector", "current_mit_vector")


def _reserved_ranges() -> list[tuple[int, int]]:
    spans = sorted((off, off + size) for _, off, size in _FIELDS)
    gaps, cursor = [], 0
    for start, end in spans:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < REPORT_SIZE:
        gaps.append((cursor, REPORT_SIZE))
    return gaps


_RESERVED = tuple(_reserved_ranges())


@dataclass(frozen=True, slots=True)
class SnpReport:
    """A parsed SEV-SNP attestation report (every field of the ABI, signature included)."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: bytes
    signature_s: bytes

    @property
    def debug(self) -> bool:
        """True when the guest policy allows debugging (policy bit 19)."""
        return bool(self.policy & POLICY_DEBUG_BIT)

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: [0x000, 0x2A0)."""
        return self.to_bytes()[:SIGNED_SIZE]

    @property
    def signature_rs(self) -> tuple[int, int]:
        """The ECDSA (r, s) integers (little-endian fields)."""
        return (int.from_bytes(self.signature_r, "little"),
                int.from_bytes(self.signature_s, "little"))

    @classmethod
    def from_bytes(cls, data: bytes) -> SnpReport:
        """Parse and validate a report.

        Args:
            data: Exactly 1184 bytes.

        Returns:
            The report.

        Raises:
            ProtocolError: Wrong size, unsupported version or signature algorithm, or a
                reserved range (or a field the version does not define) is not zero.
        """
        if len(data) != REPORT_SIZE:
            raise ProtocolError(f"SEV-SNP report must be {REPORT_SIZE} bytes, got {len(data)}")
        values: dict[str, int | bytes] = {}
        for name, off, size in _FIELDS:
            chunk = data[off:off + size]
            fmt = _INT_SIZES.get(size)
            values[name] = struct.unpack(fmt, chunk)[0] if fmt else bytes(chunk)
        version = values["version"]
        if version not in SUPPORTED_VERSIONS:
            raise ProtocolError(f"unsupported SEV-SNP report version {version!r}")
        if values["signature_algo"] != SIG_ALGO_ECDSA_P384_SHA384:
            raise ProtocolError("unsupported SEV-SNP signature algorithm")
        undefined = (*(_V3_FIELDS if version < 3 else ()), *(_V5_FIELDS if version < 5 else ()))
        if any(values[name] for name in undefined):
            raise ProtocolError("SEV-SNP report sets a field its version does not define")
        if any(any(data[a:b]) for a, b in _RESERVED):
            raise ProtocolError("SEV-SNP report has non-zero reserved bytes")
        return cls(**values)  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        """Serialize exactly (inverse of `from_bytes`)."""
        out = bytearray(REPORT_SIZE)
        for name, off, size in _FIELDS:
            value = getattr(self, name)
            fmt = _INT_SIZES.get(size)
            out[off:off + size] = struct.pack(fmt, value) if fmt else value
        return bytes(out)

    def replace(self, **changes: int | bytes) -> SnpReport:
        """A copy with some fields changed (for building reports; no validation)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def blank_report(version: int = 5) -> SnpReport:
    """An all-zero report of `version` with signature algorithm 1, for building reports.

    Args:
        version: 2, 3 or 5.

    Returns:
        The report (fields to be filled by the caller; signature empty).
    """
    data = bytearray(REPORT_SIZE)
    struct.pack_into("<I", data, 0x000, version)
    struct.pack_into("<I", data, 0x034, SIG_ALGO_ECDSA_P384_SHA384)
    return SnpReport.from_bytes(bytes(data))


def encode_signature(r: int, s: int) -> tuple[bytes, bytes]:
    """Encode ECDSA (r, s) as the report's 72-byte little-endian fields."""
    return r.to_bytes(_COMPONENT_LEN, "little"), s.to_bytes(_COMPONENT_LEN, "little")
