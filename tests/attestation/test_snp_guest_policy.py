"""Issue 9 item 5: every SEV-SNP GUEST_POLICY bit is checked against the verifier's policy.

Each case is a (policy rules, refused guest policy, accepted guest policy) triple through the real
report verifier (simulated chain): the refused one fails at its own step, its twin verifies.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from attestation import snp_guest_policy as gp
from attestation.policy import Policy, parse_policy
from attestation.report import AttestationError
from attestation.simulated import SimulatedTee
from attestation.snp_guest_policy import SnpGuestPolicy
from attestation.snp_verify import verify_snp_report

NOW = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
BASE = gp.SMT | gp.RESERVED_ONE  # what the simulator and today's hosts launch with


@pytest.fixture(scope="module")
def tee() -> SimulatedTee:
    return SimulatedTee.generate(now=NOW)


def _verify(tee: SimulatedTee, value: int, rules: SnpGuestPolicy) -> None:
    evidence = tee.report(bytes(64), bytes(48), guest_policy=value)
    verify_snp_report(evidence, tee.certs(), trust=tee.trust(), policy=Policy(snp_guest=rules),
                      now=NOW)


@pytest.mark.parametrize(("rules", "refused", "accepted", "step"), [
    pytest.param(SnpGuestPolicy(), gp.SMT, BASE, "reserved bit 17", id="reserved-one-clear"),
    pytest.param(SnpGuestPolicy(), BASE | 1 << 26, BASE, "reserved bits 63:26", id="mbz-set"),
    pytest.param(SnpGuestPolicy(), BASE | gp.MIGRATE_MA, BASE, "MIGRATE_MA", id="migrate-ma"),
    pytest.param(SnpGuestPolicy(min_abi=(1, 51)), BASE | 0x0132, BASE | 0x0133, "ABI",
                 id="abi-minor"),
    pytest.param(SnpGuestPolicy(min_abi=(1, 0)), BASE | 0x00FF, BASE | 0x0100, "ABI",
                 id="abi-major"),
    pytest.param(SnpGuestPolicy(allow_smt=False), BASE, gp.RESERVED_ONE, "SMT", id="smt"),
    pytest.param(SnpGuestPolicy(require_single_socket=True), BASE, BASE | gp.SINGLE_SOCKET,
                 "SINGLE_SOCKET", id="single-socket"),
    pytest.param(SnpGuestPolicy(), BASE | gp.CXL_ALLOW, BASE, "CXL_ALLOW", id="cxl"),
    pytest.param(SnpGuestPolicy(require_mem_aes_256_xts=True), BASE, BASE | gp.MEM_AES_256_XTS,
                 "MEM_AES_256_XTS", id="aes-256-xts"),
    pytest.param(SnpGuestPolicy(require_rapl_disabled=True), BASE, BASE | gp.RAPL_DIS,
                 "RAPL_DIS", id="rapl-dis"),
    pytest.param(SnpGuestPolicy(require_ciphertext_hiding=True), BASE,
                 BASE | gp.CIPHERTEXT_HIDING, "CIPHERTEXT_HIDING", id="ciphertext-hiding"),
])
def test_guest_policy_bit(
    tee: SimulatedTee, rules: SnpGuestPolicy, refused: int, accepted: int, step: str,
) -> None:
    _verify(tee, accepted, rules)  # positive twin
    with pytest.raises(AttestationError) as exc:
        _verify(tee, refused, rules)
    failure = exc.value.report.first_failure
    assert failure is not None
    assert failure.name == f"guest policy: {step}"


def test_cxl_allowed_by_policy(tee: SimulatedTee) -> None:
    _verify(tee, BASE | gp.CXL_ALLOW, SnpGuestPolicy(allow_cxl=True))


def test_guest_policy_from_toml() -> None:
    policy = parse_policy("[sev_snp_guest_policy]\nmin_abi_major = 1\nmin_abi_minor = 51\n"
                          "allow_smt = false\nrequire_single_socket = true\n")
    assert policy.snp_guest == SnpGuestPolicy(min_abi=(1, 51), allow_smt=False,
                                              require_single_socket=True)
