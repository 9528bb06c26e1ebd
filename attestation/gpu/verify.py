"""Verify one GPU's evidence (NVIDIA H100 or the simulated GPU), step by step, fail closed.

Steps (each recorded in the `VerificationReport`; the first failure raises `AttestationError`):
  (1) parse     SPDM 1.1 GET_MEASUREMENTS request ‖ MEASUREMENTS response (`spdm.py`)
  (2) nonce     the request nonce equals the expected nonce (DESIGN.md: SHA-256("hushcc/gpu/v2"
                ‖ SHA-256(key_config) ‖ node_id ‖ not_before ‖ not_after [‖ nonce]), computed by
                the bundle verifier)
  (3) chain     device chain leaf → ... → NVIDIA Device Identity CA (pinned), valid at `now`;
                the simulated root only when `allow_simulated`
  (4) revocation  per certificate via the injected source (OCSP, or cached OCSP answers);
                when required (the default outside the simulated root) a missing source or an
                unknown / stale answer fails; otherwise it is a WARNING ("NOT checked")
  (5) signature ECDSA P-384 / SHA-384 by the leaf (attestation key)
  (5b) fwid     the report's FWID (newer firmware) equals the leaf certificate's DICE FWID
  (6) RIMs      driver + VBIOS RIMs: XML-DSig, chain to NVIDIA's RIM root (pinned), versions equal
                to the report's opaque DRIVER_VERSION / VBIOS_VERSION — or the policy's pinned
                reference measurements instead of RIMs
  (7) versions  the policy's expected driver / VBIOS versions, when set
  (8) measurements  every active reference index matches one alternative.

CC mode: the evidence bytes are exactly what NVML returns. They carry no separate CC flag; CC
mode is established (a) on the node, where the collector (`nvml.py`) refuses to collect unless
NVML reports CC on and the GPU ready state set, and (b) here, cryptographically, by step (8): the
RIMs are the reference values of the CC-mode firmware configuration, so a GPU that is not in CC
mode does not match them. The simulated GPU models this with one measurement block
(`SIM_CC_MODE_INDEX`) whose value differs when CC is off.

Each step is a `report.step(...)` block (`attestation.report`): the step that raises is the one
that fails, by name, never guessed from how many passed.

Invariants: pure (time, policy and revocation are parameters); every expected value supplied
is compared; on any failure nothing but `AttestationError` (with the report) escapes.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.gpu.anchors import DICE_TCB_INFO, SIMULATED_ROOT_CN, load_root
from attestation.gpu.rim import Rim, compare_measurements, merge_references, verify_rim
from attestation.gpu.spdm import NONCE_SIZE, OPAQUE_FWID, GpuEvidence, verify_signature
from attestation.report import VerificationReport
from attestation.x509chain import (
    RevocationSource,
    check_revocation,
    parse_der_chain,
    public_key,
    verify_chain,
)
from hushcc.errors import VerificationError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime



@dataclass(frozen=True, slots=True)
class GpuPolicy:
    """What a verifier requires of a GPU.

    Attributes:
        driver_rim: The driver RIM (SWID tag XML) for the expected driver; with `vbios_rim`.
        vbios_rim: The VBIOS RIM for the expected VBIOS.
        reference_measurements: Pinned SPDM index → allowed digests, used instead of RIMs
            (the simulated GPU publishes its own; a deployment may pin golden values).
        expected_driver_version: When set, the report's driver version must equal it.
        expected_vbios_version: When set, the report's VBIOS version must equal it
            (case-insensitive, NVIDIA's dotted form, e.g. "96.00.5e.00.01").
    """

    driver_rim: bytes | None = None
    vbios_rim: bytes | None = None
    reference_measurements: Mapping[int, tuple[bytes, ...]] | None = None
    expected_driver_version: str | None = None
    expected_vbios_version: str | None = None


def verify_gpu_evidence(  # noqa: PLR0913 - the interface fixed with the bundle verifier
    evidence: bytes,
    certs: Sequence[bytes],
    *,
    expected_nonce: bytes,
    policy: GpuPolicy,
    now: datetime,
    allow_simulated: bool = False,
    revocation: RevocationSource | None = None,
    revocation_required: bool | None = None,
) -> VerificationReport:
    """Verify one GPU's evidence and return the report of passed steps.

    Args:
        evidence: SPDM request ‖ response bytes (bundle `gpu[i].evidence`).
        certs: Device certificate chain, DER, leaf first, root last.
        expected_nonce: The 32-byte nonce the evidence must carry.
        policy: Reference values and expected versions.
        now: Verification time (timezone-aware).
        allow_simulated: Trust the simulated GPU root (development only).
        revocation: Revocation source (OCSP responder or cache), or None.
        revocation_required: Whether revocation must be established (device chain and RIM
            chains); None: required unless the chain ends in the simulated root.

    Returns:
        The report; every step passed.

    Raises:
        AttestationError: At the first failing step (the report names it).
    """
    report = VerificationReport("gpu evidence")
    with report.step("parse") as step:
        ev = GpuEvidence.from_bytes(evidence)
        step.passed(f"SPDM 1.1 measurements, {len(ev.blocks)} blocks")
    report.check(
        len(expected_nonce) == NONCE_SIZE and hmac.compare_digest(ev.request_nonce, expected_nonce),
        "nonce",
        "request nonce equals the expected nonce",
        "request nonce differs from the expected nonce (stale or unbound evidence)",
    )
    with report.step("chain") as step:
        chain = parse_der_chain(certs)
        root, simulated = _pick_root(chain, allow_simulated=allow_simulated)
        verify_chain(chain, root, now=now)
        step.passed(f"{len(chain)} certificates to the " + (
            "SIMULATED root (allowed by allow_simulated)" if simulated else "pinned NVIDIA root"))
    required = not simulated if revocation_required is None else revocation_required
    with report.step("revocation") as step:
        checked = check_revocation(chain, revocation, now=now, required=required)
        (step.passed if checked.checked else step.warn)(checked.reason)
    with report.step("signature") as step:
        key = public_key(chain[0])
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise VerificationError("attestation key is not an EC key")
        verify_signature(ev, key)
        step.passed("ECDSA P-384/SHA-384 by the attestation key")
    with report.step("fwid") as step:
        step.passed(_check_fwid(ev, chain[0]))
    with report.step("rims") as step:
        references, reason, rims = _references(ev, policy, now, (revocation, required))
        step.passed(reason)
    if rims:
        with report.step("rim revocation") as step:
            unchecked = [r.revocation for r in rims if not r.revocation_checked]
            (step.warn if unchecked else step.passed)(
                "; ".join(unchecked) or "RIM signing chains good per the revocation source")
    with report.step("versions") as step:
        _check_versions(ev, policy)
        step.passed(f"driver {ev.driver_version}, VBIOS {ev.vbios_version}")
    with report.step("measurements") as step:
        count = sum(compare_measurements(ev.measurements, refs) for refs in references)
        step.passed(f"all {count} reference indices match (CC-mode configuration)")
    return report


def _check_fwid(ev: GpuEvidence, leaf: x509.Certificate) -> str:
    """The report's FWID (opaque field 20) must equal the leaf's DICE TcbInfo FWID.

    Firmware that predates the FWID field (nvtrust's 2023 sample) reports none; there is then
    nothing to bind and the step says so.
    """
    fwid = ev.opaque_field(OPAQUE_FWID)
    if fwid is None:
        return "report carries no FWID (older firmware): nothing to bind"
    try:
        ext = leaf.extensions.get_extension_for_oid(DICE_TCB_INFO).value
    except x509.ExtensionNotFound as exc:
        raise VerificationError("report has a FWID but the leaf has no DICE TcbInfo") from exc
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    if len(fwid) != 48 or not hmac.compare_digest(raw[-48:], fwid):
        raise VerificationError("report FWID differs from the leaf certificate's FWID")
    return "report FWID equals the attestation certificate's DICE FWID"


def _pick_root(
    chain: list[x509.Certificate], *, allow_simulated: bool
) -> tuple[x509.Certificate, bool]:
    nvidia = load_root("device_identity_root.pem")
    last = chain[-1]
    is_sim = any(a.value == SIMULATED_ROOT_CN for a in last.subject)
    if is_sim and allow_simulated:
        return last, True
    if is_sim:
        raise VerificationError("simulated GPU root is not trusted (allow_simulated is off)")
    return nvidia, False


def _references(
    ev: GpuEvidence,
    policy: GpuPolicy,
    now: datetime,
    revocation: tuple[RevocationSource | None, bool],
) -> tuple[list[Mapping[int, tuple[bytes, ...]]], str, list[Rim]]:
    """Every reference set the policy supplies (RIMs, pinned measurements, or both)."""
    sets: list[Mapping[int, tuple[bytes, ...]]] = []
    reasons: list[str] = []
    rims: list[Rim] = []
    source, required = revocation
    if policy.driver_rim is not None and policy.vbios_rim is not None:
        driver, vbios = (verify_rim(rim, now=now, revocation=source, revocation_required=required)
                         for rim in (policy.driver_rim, policy.vbios_rim))
        rims += [driver, vbios]
        _same_version(ev.driver_version, driver, "driver")
        _same_version(ev.vbios_version, vbios, "VBIOS")
        sets.append(merge_references(driver, vbios))
        reasons.append(
            f"driver RIM {driver.colloquial_version} and VBIOS RIM {vbios.colloquial_version}: "
            "signatures and chains to the pinned NVIDIA RIM root"
        )
    elif policy.driver_rim is not None or policy.vbios_rim is not None:
        raise VerificationError("policy gives only one of the driver and VBIOS RIMs")
    if policy.reference_measurements:
        sets.append(policy.reference_measurements)
        reasons.append(f"{len(policy.reference_measurements)} pinned reference measurements")
    if not sets:
        raise VerificationError("policy gives no reference values (RIMs or measurements)")
    return sets, "; ".join(reasons), rims


def _same_version(reported: str | None, rim: Rim, what: str) -> None:
    if reported is None or reported.lower() != rim.colloquial_version.lower():
        raise VerificationError(f"{what} version in the report differs from its RIM's")


def _check_versions(ev: GpuEvidence, policy: GpuPolicy) -> None:
    if policy.expected_driver_version is not None and (
        ev.driver_version != policy.expected_driver_version
    ):
        raise VerificationError("driver version differs from the policy's")
    if policy.expected_vbios_version is not None and (
        (ev.vbios_version or "").lower() != policy.expected_vbios_version.lower()
    ):
        raise VerificationError("VBIOS version differs from the policy's")
