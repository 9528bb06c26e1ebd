"""SEV-SNP report verification: VCEK -> ASK -> ARK chain, report signature, TCB, policy.

One function, `verify_snp_report`, verifies both real AMD reports and the simulated TEE's: the
only difference is the `SnpTrust` passed in (AMD's pinned roots, or the simulated root when the
caller allows simulated TEEs). Chain signatures are checked by the signer's key type: RSA keys
(AMD's ARK/ASK) must use RSASSA-PSS with the certificate's parameters; EC keys (the VCEK, and the
simulated ARK/ASK) use ECDSA with the certificate's hash.

Steps (each recorded in the `VerificationReport`, the first failure raises):
  (1) parse the report            (6) ASK signed by the ARK, valid at `now`
  (2) parse the VCEK and its AMD  (7) VCEK signed by the ASK, valid at `now`
      extensions                  (8) report signature with the VCEK key (ECDSA P-384/SHA-384)
  (3) product has a trust anchor  (9) report chip_id == VCEK hwID
  (4) ARK given equals the pinned (10) report TCB == the VCEK's TCB (the certificate decides: A6)
      one (when one is given)     (11) VCEK TCB >= policy minimum, component by component
  (5) ARK self-signed, valid at   (12) debug off (unless the policy allows it)
      `now`                       (13) every other guest-policy bit (`snp_guest_policy`)
  (7b) revocation: the ASK against the ARK-signed KDS CRL (`attestation.revocation`)
  (14) VMPL as the policy says; (15) measurement and (16) report_data as expected, when the
       caller supplies them

Pure: bytes and time in, a report out.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from attestation.report import VerificationReport
from attestation.revocation import check_amd_crl
from attestation.sevsnp import SnpReport
from attestation.snp_guest_policy import check_guest_policy
from attestation.vcek import TcbVersion, VcekInfo, load_der_certificate, parse_vcek
from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from datetime import datetime

    from cryptography import x509

    from attestation.amd import SnpTrust
    from attestation.policy import Policy

# CPUID family/model per product (reports v3+ carry them).
_CPUID = {"Milan": (0x19, 0x01), "Genoa": (0x19, 0x11), "Turin": (0x1A, 0x02)}


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key verifies `cert`'s signature (RSA-PSS or ECDSA) and names match."""
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            if not isinstance(params, padding.PSS):
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _name(cert: x509.Certificate) -> str:
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else cert.subject.rfc4514_string()


def _check_cert(report: VerificationReport, step: str, cert: x509.Certificate,
                issuer: x509.Certificate, now: datetime) -> None:
    report.check(signed_by(cert, issuer), f"{step} signature",
                 f"{_name(cert)} is signed by {_name(issuer)}",
                 f"{_name(cert)} is not signed by {_name(issuer)}")
    report.check(_valid_at(cert, now), f"{step} validity",
                 f"valid at {now.isoformat()} ({cert.not_valid_before_utc.date()} .. "
                 f"{cert.not_valid_after_utc.date()})",
                 f"not valid at {now.isoformat()} (valid {cert.not_valid_before_utc.isoformat()}"
                 f" .. {cert.not_valid_after_utc.isoformat()})")


def _parse(report: VerificationReport, evidence: bytes, certs: Sequence[bytes]
           ) -> tuple[SnpReport, VcekInfo]:
    with report.step("parse report") as step:
        snp = SnpReport.from_bytes(evidence)
        step.passed(f"version {snp.version}, {len(evidence)} bytes")
    with report.step("parse VCEK") as step:
        if not certs:
            raise ProtocolError("no VCEK certificate given")
        vcek = parse_vcek(certs[0])
        step.passed(f"product {vcek.product_name}, TCB {vcek.tcb}")
    return snp, vcek


def _chain(report: VerificationReport, vcek: VcekInfo, certs: Sequence[bytes],
           trust: SnpTrust, now: datetime) -> tuple[x509.Certificate, x509.Certificate]:
    with report.step("trust anchor") as step:
        ark = trust.arks.get(vcek.product)
        if ark is None:
            raise VerificationError(f"no {trust.name} root for product {vcek.product!r}")
        step.passed(f"{trust.name} ARK for {vcek.product}: {_name(ark)}")
    with report.step("parse chain") as step:
        given = [load_der_certificate(c) for c in certs[1:3]]
        if len(certs) > 3:
            raise ProtocolError("more than VCEK, ASK and ARK given")
        ask = given[0] if given else trust.asks.get(vcek.product)
        if ask is None:
            raise ProtocolError("no ASK given and none pinned for this product")
        step.passed(f"{'ASK given' if given else 'pinned ASK'}, ARK "
                    f"{'given' if len(given) == 2 else 'pinned'}")
    if len(given) == 2:
        report.check(given[1] == ark, "ARK pinned", "the ARK given is the pinned one",
                     f"the ARK given ({_name(given[1])}) is not the pinned {trust.name} root")
    _check_cert(report, "ARK", ark, ark, now)
    _check_cert(report, "ASK", ask, ark, now)
    _check_cert(report, "VCEK", vcek.certificate, ask, now)
    return ark, ask


def _signature(report: VerificationReport, snp: SnpReport, vcek: VcekInfo) -> None:
    key = vcek.certificate.public_key()
    ok = False
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        r, s = snp.signature_rs
        try:
            key.verify(encode_dss_signature(r, s), snp.signed_bytes, ec.ECDSA(hashes.SHA384()))
            ok = True
        except (InvalidSignature, ValueError):
            ok = False
    report.check(ok, "report signature", "ECDSA P-384/SHA-384 by the VCEK verifies",
                 "the report is not signed by the VCEK (ECDSA P-384/SHA-384)")


def _tcb(report: VerificationReport, snp: SnpReport, vcek: VcekInfo, policy: Policy) -> None:
    claimed = TcbVersion.from_u64(snp.reported_tcb, vcek.product).components()
    certified = vcek.tcb.components()
    diff = [k for k in certified if claimed[k] != certified[k]]
    report.check(not diff, "TCB matches VCEK",
                 f"reported TCB equals the VCEK's {vcek.tcb}",
                 f"reported TCB differs from the VCEK certificate in {', '.join(diff)} "
                 f"(report {[claimed[k] for k in diff]}, "
                 f"certificate {[certified[k] for k in diff]})")
    floor = policy.min_tcb.components()
    low = [k for k in certified if certified[k] < floor[k]]
    report.check(not low, "minimum TCB", f"VCEK TCB {vcek.tcb} >= policy {policy.min_tcb}",
                 f"VCEK TCB below the policy minimum in {', '.join(low)}")


def verify_snp_report(  # noqa: PLR0913 - the inputs of a verification, all named
    evidence: bytes,
    certs: Sequence[bytes],
    *,
    trust: SnpTrust,
    policy: Policy,
    now: datetime,
    expected_report_data: bytes | None = None,
    expected_measurements: Collection[bytes] | None = None,
    subject: str = "sev-snp",
    crls: Mapping[str, bytes] | None = None,
) -> tuple[SnpReport, VerificationReport]:
    """Verify an SEV-SNP report and its VCEK chain against `trust` and `policy` at `now`.

    Args:
        evidence: The 1184-byte report.
        certs: DER certificates: the VCEK, then optionally the ASK and the ARK.
        trust: The roots to chain to (`amd_trust()`, or the simulated root).
        policy: Debug, VMPL and minimum-TCB rules.
        now: The verification time (timezone-aware).
        expected_report_data: When given, report_data must equal it.
        expected_measurements: When given, the measurement must be one of them.
        subject: The report's subject line.
        crls: The ARKs' CRLs (DER, AMD KDS) per product, from the revocation cache; whether a
            missing one fails is `policy.revocation_required` (`attestation.revocation`).

    Returns:
        The parsed report and the report of every step (all passed).

    Raises:
        AttestationError: At the first failed step, with every step that ran.
    """
    report = VerificationReport(subject)
    snp, vcek = _parse(report, evidence, certs)
    ark, ask = _chain(report, vcek, certs, trust, now)
    with report.step("revocation") as step:
        checked = check_amd_crl((crls or {}).get(vcek.product), ark=ark, ask=ask, now=now,
                                required=policy.revocation_required(simulated=trust.simulated))
        (step.passed if checked.checked else step.warn)(checked.reason)
    _signature(report, snp, vcek)
    if snp.version >= 3:
        expected = _CPUID.get(vcek.product)
        report.check(expected == (snp.cpuid_fam_id, snp.cpuid_mod_id), "CPUID product",
                     f"family/model {snp.cpuid_fam_id:#x}/{snp.cpuid_mod_id:#x} is {vcek.product}",
                     f"family/model {snp.cpuid_fam_id:#x}/{snp.cpuid_mod_id:#x} is not "
                     f"{vcek.product}'s")
    report.check(hmac.compare_digest(snp.chip_id, vcek.hwid), "chip id",
                 "report chip_id equals the VCEK hwID",
                 "report chip_id differs from the VCEK hwID (another chip, or chip id masked)")
    _tcb(report, snp, vcek, policy)
    report.check(not snp.debug or policy.allow_debug, "debug",
                 "debug off" if not snp.debug else "debug on, allowed by policy",
                 f"guest policy {snp.policy:#x} allows debugging (bit 19) and the policy "
                 "refuses debug")
    check_guest_policy(report, snp.policy, policy.snp_guest)
    report.check(snp.vmpl == policy.vmpl, "VMPL", f"VMPL {snp.vmpl}",
                 f"VMPL {snp.vmpl}, policy requires {policy.vmpl}")
    if expected_measurements is not None:
        report.check(snp.measurement in expected_measurements, "measurement",
                     f"measurement {snp.measurement.hex()} is expected",
                     f"measurement {snp.measurement.hex()} is not an expected one")
    if expected_report_data is not None:
        report.check(hmac.compare_digest(snp.report_data, expected_report_data), "report_data",
                     "report_data equals the expected binding",
                     "report_data differs from the expected binding")
    return snp, report
