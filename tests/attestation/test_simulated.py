"""The simulated TEE through the SEV-SNP verifier: positive twins and the A3/A6/A7 negatives."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from attestation.amd import SnpTrust, amd_trust
from attestation.policy import Policy
from attestation.report import AttestationError, VerificationReport
from attestation.sevsnp import SnpReport
from attestation.simulated import SimulatedTee, Validity, simulated_trust_from_certs
from attestation.snp_verify import verify_snp_report
from attestation.vcek import TcbVersion
from hushcc.errors import ProtocolError

NOW = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
DATA = bytes(range(64))
MEAS = bytes(range(100, 148))


def _offline(**kw: Any) -> Policy:
    """A policy for the real AMD vector, which comes with no KDS CRL: revocation best-effort."""
    return Policy(revocation="best-effort", **kw)


@pytest.fixture(scope="module")
def tee() -> SimulatedTee:
    return SimulatedTee.generate(now=NOW)


DEFAULT = Policy()


def run(
    tee: SimulatedTee, evidence: bytes, *, certs: Sequence[bytes] | None = None,
    trust: SnpTrust | None = None, policy: Policy = DEFAULT, now: datetime = NOW, **kw: Any,
) -> tuple[SnpReport, VerificationReport]:
    certs = tee.certs() if certs is None else certs
    trust = tee.trust() if trust is None else trust
    return verify_snp_report(evidence, certs, trust=trust, policy=policy, now=now, **kw)


def step_of(tee: SimulatedTee, evidence: bytes, **kw: Any) -> str:
    with pytest.raises(AttestationError) as exc:
        run(tee, evidence, **kw)
    failure = exc.value.report.first_failure
    assert failure is not None
    return failure.name


@pytest.mark.parametrize("version", [2, 3, 5])
def test_each_version_verifies(tee: SimulatedTee, version: int) -> None:
    evidence = tee.report(DATA, MEAS, version=version)
    report, steps = run(tee, evidence, expected_report_data=DATA, expected_measurements={MEAS})
    assert report.version == version
    assert steps.passed
    assert ("CPUID product" in [s.name for s in steps.steps]) == (version >= 3)


def test_trust_from_bundle_certs_equals_own(tee: SimulatedTee) -> None:
    evidence = tee.report(DATA, MEAS)
    _, steps = run(tee, evidence, trust=simulated_trust_from_certs(tee.certs()))
    assert steps.passed


def test_simulated_refused_by_amd_roots(tee: SimulatedTee) -> None:
    evidence = tee.report(DATA, MEAS)
    assert step_of(tee, evidence, trust=amd_trust()) == "ARK pinned"
    # without the ARK in the chain, the simulated ASK does not chain to AMD's ARK
    assert step_of(tee, evidence, trust=amd_trust(), certs=tee.certs()[:2]) == "ASK signature"


def test_other_platform_root_rejected(tee: SimulatedTee) -> None:
    other = SimulatedTee.generate(now=NOW)
    evidence = tee.report(DATA, MEAS)
    assert step_of(tee, evidence, trust=other.trust()) == "ARK pinned"
    assert step_of(tee, evidence, trust=other.trust(), certs=tee.certs()[:2]) == "ASK signature"
    with pytest.raises(ProtocolError):
        simulated_trust_from_certs([*tee.certs()[:2], tee.certs()[0]])


# A3: every expected value is compared; mutate one at a time, each fails, the twin passes.
@pytest.mark.parametrize(("kwargs", "step"), [
    pytest.param({"expected_report_data": bytes(64)}, "report_data", id="report_data"),
    pytest.param({"expected_measurements": {bytes(48)}}, "measurement", id="measurement"),
    pytest.param({"policy": Policy(vmpl=1)}, "VMPL", id="vmpl"),
    pytest.param({"policy": Policy(min_tcb=TcbVersion(5, 0, 0, 0))}, "minimum TCB",
                 id="min-tcb-bootloader"),
    pytest.param({"policy": Policy(min_tcb=TcbVersion(0, 1, 0, 0))}, "minimum TCB",
                 id="min-tcb-tee"),
    pytest.param({"policy": Policy(min_tcb=TcbVersion(0, 0, 23, 0))}, "minimum TCB",
                 id="min-tcb-snp"),
    pytest.param({"policy": Policy(min_tcb=TcbVersion(0, 0, 0, 214))}, "minimum TCB",
                 id="min-tcb-microcode"),
])
def test_each_reference_value_compared(
    tee: SimulatedTee, kwargs: dict[str, Any], step: str,
) -> None:
    evidence = tee.report(DATA, MEAS)
    positive: dict[str, Any] = {"expected_report_data": DATA, "expected_measurements": {MEAS},
                "policy": Policy(min_tcb=tee.tcb)}
    assert run(tee, evidence, **positive)[1].passed
    assert step_of(tee, evidence, **(positive | kwargs)) == step


# A6: the TCB is the certificate's; a report claiming newer (or older) is rejected.
@pytest.mark.parametrize("component", ["bootloader", "tee", "snp", "microcode"])
def test_report_claiming_other_tcb_than_vcek(tee: SimulatedTee, component: str) -> None:
    claimed = dataclasses.replace(tee.tcb, **{component: getattr(tee.tcb, component) + 1})
    evidence = tee.report(DATA, MEAS, reported_tcb=claimed)
    # the claim alone would satisfy a policy at the claimed level; the certificate decides
    assert step_of(tee, evidence, policy=Policy(min_tcb=claimed)) == "TCB matches VCEK"


def test_min_tcb_checked_against_certificate(tee: SimulatedTee) -> None:
    evidence = tee.report(DATA, MEAS)
    assert run(tee, evidence, policy=Policy(min_tcb=tee.tcb))[1].passed
    higher = dataclasses.replace(tee.tcb, snp=tee.tcb.snp + 1)
    assert step_of(tee, evidence, policy=Policy(min_tcb=higher)) == "minimum TCB"


# A7: chain and policy.
def test_other_chip_id(tee: SimulatedTee) -> None:
    evidence = tee.report(DATA, MEAS, chip_id=b"\x42" * 64)
    assert step_of(tee, evidence) == "chip id"


def test_debug(tee: SimulatedTee) -> None:
    evidence = tee.report(DATA, MEAS, debug=True)
    assert SnpReport.from_bytes(evidence).debug
    assert step_of(tee, evidence) == "debug"
    assert run(tee, evidence, policy=_offline(allow_debug=True))[1].passed


def test_expired_intermediate() -> None:
    short = Validity(NOW - timedelta(days=30), NOW + timedelta(hours=1))
    tee = SimulatedTee.generate(now=NOW, ask_validity=short)
    evidence = tee.report(DATA, MEAS)
    assert run(tee, evidence)[1].passed
    assert step_of(tee, evidence, now=NOW + timedelta(hours=2)) == "ASK validity"


def test_expired_vcek_and_root(tee: SimulatedTee) -> None:
    evidence = tee.report(DATA, MEAS)
    assert step_of(tee, evidence, now=NOW + timedelta(days=400)) == "ARK validity"
    short = SimulatedTee.generate(now=NOW, vcek_validity=Validity(NOW, NOW + timedelta(hours=1)))
    assert step_of(short, short.report(DATA, MEAS), now=NOW + timedelta(hours=2)) == \
        "VCEK validity"


def test_report_signed_by_other_vcek(tee: SimulatedTee) -> None:
    other = SimulatedTee.generate(now=NOW)
    evidence = other.report(DATA, MEAS, chip_id=tee.chip_id)
    assert step_of(tee, evidence) == "report signature"


def test_report_argument_lengths(tee: SimulatedTee) -> None:
    with pytest.raises(ProtocolError):
        tee.report(DATA[:32], MEAS)
    with pytest.raises(ProtocolError):
        tee.report(DATA, MEAS[:32])


def test_same_verification_steps_as_the_real_milan_report(
    tee: SimulatedTee, shared_vectors: Path,
) -> None:
    """Done-criterion: the simulated TEE runs exactly the SEV-SNP verifier's steps."""
    base = shared_vectors / "attestation" / "sev_snp"
    real = (base / "attestation.bin").read_bytes()
    vcek = (base / "vcek.der").read_bytes()
    _, real_steps = verify_snp_report(real, [vcek], trust=amd_trust(),
                                      policy=_offline(allow_debug=True),
                                      now=datetime(2023, 6, 1, tzinfo=UTC))
    sim = tee.report(DATA, MEAS, version=2)
    _, sim_steps = run(tee, sim, certs=tee.certs()[:2])  # VCEK + ASK, ARK from the trust
    assert [s.name for s in sim_steps.steps] == [s.name for s in real_steps.steps]
