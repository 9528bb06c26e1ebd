"""Intel TDX quote (DCAP v4 / v5) verification with cached PCS collateral, fail closed.

Steps (each recorded in the `VerificationReport`):
  (1) parse        header, TD report body (TDX 1.0: 584 bytes; v5 body type 3 = TDX 1.5: 648)
                   and the PCK chain, with our own parser (`attestation.tdx_quote`)
  (2) intel root   the quote's PCK chain ends in the pinned Intel SGX Root CA
                   (`attestation/intel_roots/sgx_root_ca.pem`), and that same root is the one
                   handed to dcap-qvl (never its built-in copy)
  (3) dcap-qvl     quote signature by the attestation key, QE report signature by the PCK key
                   and its binding to the attestation key, PCK chain + CRLs, TCB info and QE
                   identity signatures and freshness at `now`, FMSPC and TCB-level matching
  (4) agreement    dcap-qvl's view of the TD report equals our parse (no parser divergence)
  (5) tcb status   the platform TCB status is one the policy allows (UpToDate by default)
  (6) debug        TD attributes DEBUG bit is clear
  (7) mr_td, rtmr0..rtmr3, report_data, mr_seam: each value the policy pins is compared.

`verify_quote_signatures` checks only the collateral-independent part (quote and QE report
signatures, QE binding, PCK chain to the pinned root) for quotes whose signed PCS collateral is
not at hand — go-tdx-guest's `tdx_prod_quote_SPR_E4.dat` / `quote_v5_sample.dat` ship TCB info
without its signing chain and signature, so dcap-qvl cannot verify them. It never accepts a TD.

The quote's parser is `attestation.tdx_quote` (strict: every byte of the signature data is
accounted for). Each step is a `report.step(...)` block, named where it runs.

Invariants: pure (time is a parameter: dcap-qvl gets `now` as Unix seconds); only
`AttestationError` escapes `verify_tdx_quote`; parsers raise only `ProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import dcap_qvl
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.report import VerificationReport
from attestation.tdx_quote import MEASUREMENT_FIELDS, TdReport, TdxQuote
from attestation.x509chain import public_key, verify_chain
from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(frozen=True, slots=True)
class TdxPolicy:
    """What a verifier requires of a TD. `None` means "not pinned" and is reported as such.

    Attributes:
        allowed_tcb_statuses: Platform TCB statuses accepted (Intel PCS names).
        allow_debug: Accept a TD with the DEBUG attribute (never in production).
        mr_td, rtmr0..rtmr3, report_data, mr_seam: Expected values, compared byte for byte.
    """

    allowed_tcb_statuses: frozenset[str] = field(default_factory=lambda: frozenset({"UpToDate"}))
    allow_debug: bool = False
    mr_td: bytes | None = None
    rtmr0: bytes | None = None
    rtmr1: bytes | None = None
    rtmr2: bytes | None = None
    rtmr3: bytes | None = None
    report_data: bytes | None = None
    mr_seam: bytes | None = None


def load_intel_root() -> x509.Certificate:
    """The pinned Intel SGX Root CA (package data)."""
    pem = resources.files("attestation.intel_roots").joinpath("sgx_root_ca.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem)


def load_collateral(collateral: Any) -> Any:  # noqa: ANN401 - dcap_qvl is untyped
    """Accept a `dcap_qvl.QuoteCollateralV3`, its JSON text/bytes, or the parsed JSON dict.

    Raises:
        ProtocolError: The collateral does not parse.
    """
    if isinstance(collateral, dcap_qvl.QuoteCollateralV3):
        return collateral
    text = json.dumps(collateral) if isinstance(collateral, dict) else collateral
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        raise ProtocolError("tdx: collateral must be QuoteCollateralV3, JSON text or a dict")
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as exc:
        raise ProtocolError("tdx: collateral does not parse") from exc


_DCAP_NAMES = {"rtmr0": "rt_mr0", "rtmr1": "rt_mr1", "rtmr2": "rt_mr2", "rtmr3": "rt_mr3"}


def verify_tdx_quote(
    quote: bytes,
    collateral: Any,  # noqa: ANN401 - QuoteCollateralV3 | JSON text | dict
    *,
    now: datetime,
    policy: TdxPolicy,
) -> VerificationReport:
    """Verify a TDX quote against cached collateral at `now` and the policy.

    Args:
        quote: The raw DCAP quote (v4 or v5).
        collateral: PCS collateral (`QuoteCollateralV3`, its JSON, or the JSON as a dict).
        now: Verification time (timezone-aware); collateral must be fresh at this time.
        policy: TCB statuses, debug and the expected measurement values.

    Returns:
        The report; every step passed.

    Raises:
        AttestationError: At the first failing step.
    """
    report = VerificationReport("tdx quote")
    with report.step("parse") as step:
        parsed = TdxQuote.from_bytes(quote)
        coll = load_collateral(collateral)
        step.passed(f"quote v{parsed.version}, TD report {_td_kind(parsed)}")
    with report.step("intel root") as step:
        root = load_intel_root()
        _check_root(parsed, root)
        step.passed("PCK chain ends in the pinned Intel SGX Root CA")
    with report.step("dcap-qvl") as step:
        verified = _dcap_verify(quote, coll, root, now)
        step.passed("quote, QE report, PCK chain, CRLs, TCB info and QE identity verify")
    with report.step("agreement") as step:
        _check_agreement(parsed.report, verified)
        step.passed("dcap-qvl's TD report equals our parse")
    status = str(verified.status)
    report.check(
        status in policy.allowed_tcb_statuses,
        "tcb status",
        f"platform TCB {status} is allowed",
        f"platform TCB {status} is not allowed by policy",
    )
    report.check(
        policy.allow_debug or not parsed.report.debug,
        "debug",
        "TD debug attribute " + ("set, allowed by policy" if parsed.report.debug else "clear"),
        "TD runs in debug mode",
    )
    for name in MEASUREMENT_FIELDS:
        expected: bytes | None = getattr(policy, name)
        if expected is None:
            report.ok(name, "not pinned by policy")
            continue
        actual: bytes = getattr(parsed.report, name)
        report.check(
            hmac.compare_digest(actual, expected),
            name,
            "equals the expected value",
            "differs from the expected value",
        )
    return report


def verify_quote_signatures(quote: bytes, *, now: datetime) -> VerificationReport:
    """Check the collateral-independent part of a quote; NOT a full verification.

    For quotes whose signed PCS collateral is not at hand (go-tdx-guest's samples): quote
    signature by the attestation key, QE report signature by the PCK key, QE report_data binding
    of the attestation key, and the PCK chain to the pinned Intel root at `now`. TCB status,
    CRLs and QE identity are NOT checked — the report says so; `verify_tdx_quote` is the only
    acceptance path.

    Raises:
        AttestationError: At the first failing step.
    """
    report = VerificationReport("tdx quote signatures (no collateral)")
    with report.step("parse") as step:
        q = TdxQuote.from_bytes(quote)
        step.passed(f"quote v{q.version}, TD report {_td_kind(q)}")
    with report.step("pck chain") as step:
        verify_chain(q.pck_chain, load_intel_root(), now=now)
        step.passed("PCK chain to the pinned Intel SGX Root CA, valid at this time")
    with report.step("qe report") as step:
        _p256_verify(public_key(q.pck_chain[0]), q.qe_report_signature, q.qe_report)
        step.passed("QE report signed by the PCK key")
    with report.step("qe binding") as step:
        _check_qe_binding(q)
        step.passed("QE report_data = SHA-256(attestation key ‖ QE auth data) ‖ 0^32")
    with report.step("quote signature") as step:
        point = b"\x04" + q.attestation_key
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise VerificationError("attestation key is not a P-256 point") from exc
        _p256_verify(key, q.signature, q.signed_region)
        step.passed("header and TD report signed by the attestation key")
    with report.step("collateral") as step:
        step.warn("NOT checked: no PCS collateral (TCB status, CRLs, QE identity)")
    return report


def _check_qe_binding(q: TdxQuote) -> None:
    bound = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(q.qe_report[320:384], bound):  # SGX report body report_data
        raise VerificationError("QE report_data does not bind the attestation key")


def _p256_verify(key: object, raw_sig: bytes, message: bytes) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or len(raw_sig) != 64:
        raise VerificationError("not a P-256 key or signature")
    r, s = int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VerificationError("ECDSA P-256 signature does not verify") from exc


def _td_kind(parsed: TdxQuote) -> str:
    return "TDX 1.5" if parsed.report.mr_service_td else "TDX 1.0"


def _check_root(parsed: TdxQuote, root: x509.Certificate) -> None:
    if parsed.pck_chain[-1].public_bytes(Encoding.DER) != root.public_bytes(Encoding.DER):
        raise VerificationError("PCK chain does not end in the pinned Intel root")


def _dcap_verify(quote: bytes, coll: Any, root: x509.Certificate, now: datetime) -> Any:  # noqa: ANN401
    try:
        return dcap_qvl.verify_with_root_ca(
            bytes(quote), coll, root.public_bytes(Encoding.DER), int(now.timestamp())
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        raise VerificationError(f"dcap-qvl: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).replace("Verification failed: ", "").split(" | ")[0][:200]


def _check_agreement(ours: TdReport, verified: Any) -> None:  # noqa: ANN401
    try:
        body = json.loads(verified.to_json())["report"]
        (td,) = body.values()
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError("dcap-qvl returned no TD report") from exc
    if not isinstance(td, dict):
        raise VerificationError("dcap-qvl returned no TD report")
    for name in (*MEASUREMENT_FIELDS, "td_attributes", "tee_tcb_svn"):
        theirs = td.get(_DCAP_NAMES.get(name, name))
        if theirs != getattr(ours, name).hex():
            raise VerificationError(f"dcap-qvl and our parser disagree on {name}")
