"""SEV-SNP guest policy: every GUEST_POLICY bit of a report checked against the verifier's rules.

The host chooses the guest policy at launch and it is not part of the launch digest, so a
measurement match says nothing about it: each bit must be checked on its own (AMD SEV-SNP ABI
specification, rev. 1.57, Table 9 "Structure of the GUEST_POLICY Field"):

    bits 7:0   ABI_MINOR          minimum firmware ABI minor version the guest requires
    bits 15:8  ABI_MAJOR          minimum firmware ABI major version the guest requires
    bit 16     SMT                1: SMT (hyper-threading) allowed
    bit 17     reserved           must be one
    bit 18     MIGRATE_MA         1: association with a migration agent allowed
    bit 19     DEBUG              1: debugging allowed (checked by the verifier's "debug" step)
    bit 20     SINGLE_SOCKET      1: the guest can run on one socket only
    bit 21     CXL_ALLOW          1: CXL memory may back the guest
    bit 22     MEM_AES_256_XTS    1: AES-256-XTS memory encryption required
    bit 23     RAPL_DIS           1: running average power limit disabled
    bit 24     CIPHERTEXT_HIDING  1: ciphertext hiding required
    bit 25     PAGE_SWAP_DISABLE  1: SNP_PAGE_MOVE/SWAP disabled (hardening; never refused)
    bits 63:26 reserved           must be zero

Rules (`SnpGuestPolicy`, the `[sev_snp_guest_policy]` table of the verifier's TOML policy):
bit 17 set and bits 63:26 clear always; MIGRATE_MA always clear (a migration agent could read
the guest's memory); the ABI at least `min_abi`; SMT only when `allow_smt`; SINGLE_SOCKET when
`require_single_socket`; CXL only when `allow_cxl`; AES-256-XTS, RAPL_DIS and ciphertext hiding
when required.

Invariants: pure; each rule is its own named step ("guest policy: <bit>"), so a failure names
the bit; the defaults accept what current hosts launch (SMT on, ABI 0.0) and nothing unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attestation.report import VerificationReport

SMT = 1 << 16
RESERVED_ONE = 1 << 17
MIGRATE_MA = 1 << 18
SINGLE_SOCKET = 1 << 20
CXL_ALLOW = 1 << 21
MEM_AES_256_XTS = 1 << 22
RAPL_DIS = 1 << 23
CIPHERTEXT_HIDING = 1 << 24
RESERVED_ZERO = ~((1 << 26) - 1) & ((1 << 64) - 1)


@dataclass(frozen=True, slots=True)
class SnpGuestPolicy:
    """What a verifier requires of the GUEST_POLICY bits (module docstring)."""

    min_abi: tuple[int, int] = (0, 0)
    allow_smt: bool = True
    require_single_socket: bool = False
    allow_cxl: bool = False
    require_mem_aes_256_xts: bool = False
    require_rapl_disabled: bool = False
    require_ciphertext_hiding: bool = False


def _bit(value: int, mask: int) -> bool:
    return bool(value & mask)


def check_guest_policy(report: VerificationReport, value: int, rules: SnpGuestPolicy) -> None:
    """Record one step per rule for the 64-bit GUEST_POLICY `value`; raise at the first failure.

    Raises:
        AttestationError: A bit differs from what the rules allow.
    """
    abi = ((value >> 8) & 0xFF, value & 0xFF)
    checks: tuple[tuple[bool, str, str, str], ...] = (
        (_bit(value, RESERVED_ONE), "reserved bit 17", "set", "clear (must be one)"),
        (not value & RESERVED_ZERO, "reserved bits 63:26", "clear",
         f"{value & RESERVED_ZERO:#x} set (must be zero)"),
        (not _bit(value, MIGRATE_MA), "MIGRATE_MA", "off",
         "on: a migration agent may be associated with the guest"),
        (abi >= rules.min_abi, "ABI", f"{abi[0]}.{abi[1]} >= {rules.min_abi[0]}.{rules.min_abi[1]}",
         f"{abi[0]}.{abi[1]} is below the policy's {rules.min_abi[0]}.{rules.min_abi[1]}"),
        (rules.allow_smt or not _bit(value, SMT), "SMT",
         "allowed" if _bit(value, SMT) else "off", "SMT allowed and the policy refuses SMT"),
        (_bit(value, SINGLE_SOCKET) or not rules.require_single_socket, "SINGLE_SOCKET",
         "on" if _bit(value, SINGLE_SOCKET) else "off, not required",
         "off and the policy requires a single socket"),
        (rules.allow_cxl or not _bit(value, CXL_ALLOW), "CXL_ALLOW",
         "on, allowed by policy" if _bit(value, CXL_ALLOW) else "off",
         "on and the policy refuses CXL-backed guest memory"),
        (_bit(value, MEM_AES_256_XTS) or not rules.require_mem_aes_256_xts, "MEM_AES_256_XTS",
         "on" if _bit(value, MEM_AES_256_XTS) else "off, not required",
         "off and the policy requires AES-256-XTS"),
        (_bit(value, RAPL_DIS) or not rules.require_rapl_disabled, "RAPL_DIS",
         "on" if _bit(value, RAPL_DIS) else "off, not required",
         "off and the policy requires RAPL disabled"),
        (_bit(value, CIPHERTEXT_HIDING) or not rules.require_ciphertext_hiding,
         "CIPHERTEXT_HIDING", "on" if _bit(value, CIPHERTEXT_HIDING) else "off, not required",
         "off and the policy requires ciphertext hiding"),
    )
    for ok, name, passed, failed in checks:
        report.check(ok, f"guest policy: {name}", passed, failed)
