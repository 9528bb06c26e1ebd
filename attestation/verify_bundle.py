"""Client-side verification of an attestation bundle (DESIGN.md steps 1-6), fail closed.

Steps, all recorded in one `VerificationReport` (sub-verifiers' steps are prefixed):
  (0) parse the bundle (`attestation.bundle`)
  (1) CPU evidence: type allowed (`simulated` only with `policy.allow_simulated`), then
      `verify_snp_report` against the injected trust anchors for that type (`cpu_trust`:
      AMD's pinned roots by default; a caller that may see simulated evidence injects
      `attestation.simulated.WITH_SIMULATED`): the same code path for both. TDX goes to an
      injected `TdxVerifier` (`DcapTdxVerifier`: dcap-qvl with the caller's cached collateral;
      measurement = MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ RTMR3, 240 bytes).
  (2) GPU evidence: at least one GPU unless the policy waives it; each one through
      `attestation.gpu.verify_gpu_evidence` with the nonce the binding prescribes.
  (3) binding: report_data == SHA-512("hushcc/attest/v2" || ...) over every field a step
      decides on (key config, GPU evidence, node id, not_before, not_after, nonce; see
      `attestation.bundle`), and the bundle's nonce equals the client's when it asked for one.
      Each GPU's nonce binds the same fields, so with GPUs a rewritten field already fails at
      "(2) GPU i: nonce".
  (4) measurement equals the one the release entry lists for this CPU type (and is in the
      policy's allow-list when it has one). The entry's `tdx` value is the hex of MRTD ‖ RTMR0
      ‖ RTMR1 ‖ RTMR2 ‖ RTMR3 (the kernel, initrd and command line are measured into the RTMRs,
      so MRTD alone pins nothing of them); each register is its own step.
  (5) the entry is included in a checkpoint the pinned log key signed, and that checkpoint is
      at most `policy.max_checkpoint_age` old (its log-signed or a witness's timestamp): an
      injected `LogVerifier` (`StapledLogVerifier` adapts the transparency-log client).
  (6) validity window: not_before <= now < not_after, issued at most `max_age` ago, and a
      lifetime of at most `max_validity`.
Any failure raises `AttestationError` carrying the report; only `verify_bundle`'s return value
(a `VerifiedBundle`) hands out the key config, and only when every step passed.

Pure: time, the log verifier, GPU reference values and revocation are parameters.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from attestation import bundle as fmt
from attestation.amd import AMD_TRUST
from attestation.gpu import GpuPolicy, verify_gpu_evidence
from attestation.report import VerificationReport
from attestation.revocation import RevocationSources
from attestation.snp_verify import verify_snp_report
from attestation.tdx import TdxPolicy, verify_tdx_quote
from attestation.tdx_quote import REGISTER_SIZE, TDX_REGISTERS, TdxQuote, tdx_measurement
from hushcc.errors import ProtocolError, VerificationError
from transparency_log.client import verify_stapled_inclusion
from transparency_log.entry import ReleaseEntry

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime, timedelta

    from attestation.amd import CpuTrust
    from attestation.policy import Policy
    from transparency_log.cosignature import WitnessPolicy

NO_REVOCATION_SOURCES = RevocationSources()
SNP_MEASUREMENT_SIZE = 48
# The release entry's `measurements` key for each CPU evidence type.
MEASUREMENT_KEYS = {"sev-snp": "sev-snp", "tdx": "tdx", "simulated": "sim"}


class LogVerifier(Protocol):
    """Checks a stapled inclusion proof; raises `VerificationError` when it does not hold."""

    def verify(self, entry: bytes, index: int, checkpoint: str, proof: Sequence[bytes], *,
               max_age: timedelta) -> None:
        """Verify `entry` is leaf `index` of a pinned-key checkpoint at most `max_age` old."""


@dataclass(frozen=True, slots=True)
class CpuClaims:
    """What verified CPU evidence states: the bound report_data and the launch measurement."""

    report_data: bytes
    measurement: bytes


class TdxVerifier(Protocol):
    """Verifies a TDX quote; returns its claims and the steps, or raises `AttestationError`."""

    def __call__(self, quote: bytes, certs: Sequence[bytes], *, now: datetime
                 ) -> tuple[CpuClaims, VerificationReport]:
        """Verify and return the quote's report_data and MRTD ‖ RTMR0..3 measurement."""


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """What a client may use after verification: only ever built when every step passed."""

    node_id: bytes
    key_config: bytes
    not_after: datetime
    measurement: bytes
    report: VerificationReport


def entry_measurement(entry: bytes, cpu_type: str) -> bytes:
    """The measurement a release entry lists for `cpu_type` (`measurements[MEASUREMENT_KEYS]`).

    The entry must be a canonical `hushcc.release/v1` entry (`transparency_log.entry`).

    Raises:
        ProtocolError: Not a release entry, or it lists no measurement for this CPU type.
    """
    release = ReleaseEntry.from_bytes(entry)
    value = release.measurements.get(MEASUREMENT_KEYS[cpu_type])
    size = len(TDX_REGISTERS) * REGISTER_SIZE if cpu_type == "tdx" else SNP_MEASUREMENT_SIZE
    if value is None or len(value) != 2 * size:
        raise ProtocolError(f"release entry lists no {size}-byte {cpu_type} measurement")
    return bytes.fromhex(value)


@dataclass(frozen=True, slots=True)
class StapledLogVerifier:
    """`LogVerifier` over the transparency-log client: pinned key, optional max age, witnesses.

    Consistency with the last checkpoint a client saw needs its persisted state and a
    consistency proof: the SDK's `transparency_log.client.LogClient` does that part.
    """

    log_key: str
    now: datetime
    witness_policy: WitnessPolicy | None = None

    def verify(self, entry: bytes, index: int, checkpoint: str, proof: Sequence[bytes], *,
               max_age: timedelta) -> None:
        """Verify the stapled inclusion proof (`transparency_log.client.verify_stapled_inclusion`).

        Raises:
            VerificationError: The checkpoint, its signature or the proof does not verify.
        """
        try:
            verify_stapled_inclusion(entry, index, checkpoint, proof, log_verifier_key=self.log_key,
                                     max_age=int(max_age.total_seconds()),
                                     now=int(self.now.timestamp()),
                                     witness_policy=self.witness_policy)
        except ProtocolError as exc:
            raise VerificationError(f"stapled log proof is malformed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DcapTdxVerifier:
    """`TdxVerifier` over `attestation.tdx.verify_tdx_quote` with cached PCS collateral."""

    collateral: object
    policy: TdxPolicy

    def __call__(self, quote: bytes, certs: Sequence[bytes], *, now: datetime
                 ) -> tuple[CpuClaims, VerificationReport]:
        """Verify the quote; return its report_data and MRTD ‖ RTMR0..3 (its measurement)."""
        del certs  # the quote carries its own PCK chain
        report = verify_tdx_quote(quote, self.collateral, now=now, policy=self.policy)
        parsed = TdxQuote.from_bytes(quote).report
        return CpuClaims(parsed.report_data, tdx_measurement(parsed)), report


@dataclass(frozen=True, slots=True)
class _Options:
    policy: Policy
    now: datetime
    gpu_policy: GpuPolicy | None
    revocation: RevocationSources
    tdx: TdxVerifier | None
    cpu_trust: CpuTrust


def _cpu(report: VerificationReport, b: fmt.Bundle, opt: _Options) -> CpuClaims:
    kind = b.cpu.type
    report.check(kind != "simulated" or opt.policy.allow_simulated, "(1) CPU type",
                 f"{kind} evidence", "simulated CPU evidence and the policy refuses simulated TEEs")
    if kind == "tdx":
        tdx = opt.tdx
        if tdx is None:
            raise report.fail("(1) CPU evidence", "no TDX verifier configured")
        return report.include("(1) tdx", lambda: tdx(b.cpu.evidence, b.cpu.certs, now=opt.now))
    with report.step("(1) CPU trust anchor") as step:
        anchors = opt.cpu_trust.get(kind)
        if anchors is None:
            raise VerificationError(f"no trust anchors configured for {kind} evidence")
        trust = anchors(b.cpu.certs)
        step.passed(f"{trust.name} roots for {kind} evidence")

    def run_snp() -> tuple[CpuClaims, VerificationReport]:
        snp, sub = verify_snp_report(b.cpu.evidence, b.cpu.certs, trust=trust,
                                     policy=opt.policy, now=opt.now,
                                     crls=opt.revocation.amd_crls)
        return CpuClaims(snp.report_data, snp.measurement), sub
    return report.include(f"(1) {kind}", run_snp)


def _gpus(report: VerificationReport, b: fmt.Bundle, opt: _Options) -> None:
    report.check(bool(b.gpu) or not opt.policy.require_gpu, "(2) GPU present",
                 f"{len(b.gpu)} GPU(s)", "no GPU evidence and the policy requires a GPU")
    nonce = b.binding.gpu_nonce()
    for i, gpu in enumerate(b.gpu):
        simulated = gpu.type == "simulated"
        report.check(not simulated or opt.policy.allow_simulated, f"(2) GPU {i} type",
                     f"{gpu.type} evidence",
                     "simulated GPU evidence and the policy refuses simulated TEEs")
        if opt.gpu_policy is None:
            raise report.fail(f"(2) GPU {i}", "no GPU reference values (RIMs) configured")
        report.include(f"(2) GPU {i}", functools.partial(
            _gpu_sub, gpu, policy=opt.gpu_policy, nonce=nonce, opt=opt))


def _gpu_sub(gpu: fmt.Evidence, *, policy: GpuPolicy, nonce: bytes,
             opt: _Options) -> tuple[None, VerificationReport]:
    simulated = gpu.type == "simulated"
    return None, verify_gpu_evidence(
        gpu.evidence, gpu.certs, expected_nonce=nonce, policy=policy, now=opt.now,
        allow_simulated=simulated, revocation=opt.revocation.gpu,
        revocation_required=opt.policy.revocation_required(simulated=simulated))


def _window(report: VerificationReport, b: fmt.Bundle, opt: _Options) -> None:
    now, policy = opt.now, opt.policy
    report.check(b.not_before <= now < b.not_after, "(6) validity window",
                 f"{now.isoformat()} is within {fmt.format_time(b.not_before)} .. "
                 f"{fmt.format_time(b.not_after)}",
                 f"{now.isoformat()} is outside {fmt.format_time(b.not_before)} .. "
                 f"{fmt.format_time(b.not_after)}")
    report.check(now - b.not_before <= policy.max_age, "(6) age",
                 f"issued {now - b.not_before} ago (max {policy.max_age})",
                 f"issued {now - b.not_before} ago, more than the policy's {policy.max_age}")
    report.check(b.not_after - b.not_before <= policy.max_validity, "(6) lifetime",
                 f"lifetime {b.not_after - b.not_before} (max {policy.max_validity})",
                 f"lifetime {b.not_after - b.not_before} exceeds {policy.max_validity}")


def verify_bundle(  # noqa: PLR0913 - the inputs of a verification, all named
    data: bytes, *, policy: Policy, now: datetime, log: LogVerifier | None,
    gpu_policy: GpuPolicy | None = None, expected_nonce: bytes | None = None,
    revocation: RevocationSources = NO_REVOCATION_SOURCES, tdx: TdxVerifier | None = None,
    cpu_trust: CpuTrust = AMD_TRUST,
) -> VerifiedBundle:
    """Verify a bundle's evidence, binding, log inclusion and validity (module docstring).

    Args:
        data: The bundle JSON.
        policy: What the client accepts.
        now: Verification time (timezone-aware).
        log: Stapled-inclusion verifier for the pinned log; None fails step (5).
        gpu_policy: GPU reference values (RIMs or pinned measurements).
        expected_nonce: The client's per-request nonce, when it asked for one.
        revocation: AMD CRLs and the GPU revocation source (cached; `attestation.revocation`).
            Whether a missing or stale one fails is `policy.revocation_required`.
        tdx: TDX quote verifier.
        cpu_trust: Trust anchors per CPU evidence type (AMD's pinned roots by default).

    Returns:
        The verified key config and node identity, with the full report.

    Raises:
        AttestationError: At the first failed step, with every step that ran.
    """
    report = VerificationReport("attestation bundle")
    opt = _Options(policy, now, gpu_policy, revocation, tdx, cpu_trust)
    with report.step("(0) parse") as step:
        b = fmt.Bundle.from_json(data)
        step.passed(f"node {b.node_id.hex()[:16]}..., cpu {b.cpu.type}, {len(b.gpu)} GPU(s)")
    claims = _cpu(report, b, opt)
    bound, measurement = claims.report_data, claims.measurement
    _gpus(report, b, opt)
    expected = b.binding.report_data(b.gpu)
    report.check(hmac.compare_digest(bound, expected), "(3) binding",
                 "report_data binds the key config, GPU evidence, node id, validity and nonce",
                 "report_data does not bind this bundle's key config, GPU evidence, node id, "
                 "validity or nonce")
    if expected_nonce is not None:
        report.check(b.nonce is not None and hmac.compare_digest(b.nonce, expected_nonce),
                     "(3) nonce", "the bundle is bound to the client's nonce",
                     "the bundle is not bound to the client's nonce")
    _measurement(report, b, measurement, policy)
    _log(report, b, log, policy)
    _window(report, b, opt)
    return VerifiedBundle(b.node_id, b.key_config, b.not_after, measurement, report)


def _measurement(report: VerificationReport, b: fmt.Bundle, measurement: bytes,
                 policy: Policy) -> None:
    with report.step("(4) release measurement") as step:
        logged = entry_measurement(b.release.entry, b.cpu.type)
        if len(measurement) != len(logged):
            raise VerificationError("the evidence's measurement has another size than the entry's")
        step.passed(f"the release entry lists a {b.cpu.type} measurement")
    names = ("MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3") if b.cpu.type == "tdx" else ("",)
    size = len(logged) // len(names)
    for i, name in enumerate(names):
        ours, theirs = (m[i * size:(i + 1) * size] for m in (measurement, logged))
        report.check(hmac.compare_digest(ours, theirs),
                     f"(4) measurement: {name}" if name else "(4) measurement",
                     f"{name or 'measurement'} {ours.hex()[:24]}... equals the logged release's",
                     f"{name or 'measurement'} {ours.hex()[:24]}... is not the logged release's "
                     f"{theirs.hex()[:24]}...")
    if policy.allowed_measurements:
        report.check(measurement in policy.allowed_measurements, "(4) allowed measurement",
                     "measurement is in the policy's allow-list",
                     "measurement is not in the policy's allow-list")


def _log(report: VerificationReport, b: fmt.Bundle, log: LogVerifier | None,
         policy: Policy) -> None:
    if log is None:
        raise report.fail("(5) log inclusion", "no transparency-log verifier configured")
    r = b.release
    with report.step("(5) log inclusion") as step:
        log.verify(r.entry, r.index, r.checkpoint, r.inclusion_proof,
                   max_age=policy.max_checkpoint_age)
        step.passed(f"entry {r.index} is included in a checkpoint the log signed at most "
                    f"{policy.max_checkpoint_age} ago")
