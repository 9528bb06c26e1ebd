"""Intel TDX quote (DCAP v4 / v5) verification with cached PCS collateral, fail closed.

Steps (each recorded in the `VerificationReport`):
  (1) parse        header, TD report body (TDX 1.0: 584 bytes; v5 body type 3 = TDX 1.5: 648)
                   and the PCK chain, with our own parser (`TdxQuote.from_bytes`)
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

Parsing is strict: the certification data must exactly fill the signature data and the PCK
chain must be canonical PEM, so no byte of the signature data can change without rejection;
bytes after the signature data are outside the quote structure and ignored (real quotes carry
zero padding there; dcap-qvl and go-tdx-guest ignore them too).

Invariants: pure (time is a parameter: dcap-qvl gets `now` as Unix seconds); only
`AttestationError` escapes `verify_tdx_quote`; parsers raise only `ProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
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
from attestation.x509chain import parse_pem_chain, public_key, verify_chain
from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from datetime import datetime

HEADER_SIZE = 48
TDX_TEE_TYPE = 0x81
ECDSA_P256 = 2
TD10_SIZE = 584
TD15_SIZE = 648
BODY_TD10, BODY_TD15 = 2, 3
CERT_QE_REPORT, CERT_PCK_CHAIN = 6, 5
QE_REPORT_SIZE = 384
TD_ATTR_DEBUG = 0x01  # TUD.DEBUG, bit 0 of TDATTRIBUTES
MEASUREMENT_FIELDS = ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "report_data", "mr_seam")

# TD report body offsets (Intel TDX DCAP Quote Generation Library, A.3.2 / A.4.2)
_TD_LAYOUT: tuple[tuple[str, int, int], ...] = (
    ("tee_tcb_svn", 0, 16),
    ("mr_seam", 16, 48),
    ("mr_signer_seam", 64, 48),
    ("seam_attributes", 112, 8),
    ("td_attributes", 120, 8),
    ("xfam", 128, 8),
    ("mr_td", 136, 48),
    ("mr_config_id", 184, 48),
    ("mr_owner", 232, 48),
    ("mr_owner_config", 280, 48),
    ("rtmr0", 328, 48),
    ("rtmr1", 376, 48),
    ("rtmr2", 424, 48),
    ("rtmr3", 472, 48),
    ("report_data", 520, 64),
)


@dataclass(frozen=True, slots=True)
class TdReport:
    """The TD report body fields a policy compares (TDX 1.0 and 1.5 share these offsets)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes = b""  # TDX 1.5 only
    mr_service_td: bytes = b""  # TDX 1.5 only

    @classmethod
    def from_bytes(cls, body: bytes) -> TdReport:
        """Parse a 584-byte (TDX 1.0) or 648-byte (TDX 1.5) TD report body.

        Raises:
            ProtocolError: Any other length.
        """
        if len(body) not in {TD10_SIZE, TD15_SIZE}:
            raise ProtocolError("tdx: TD report body has an unknown size")
        fields = {name: bytes(body[off : off + size]) for name, off, size in _TD_LAYOUT}
        if len(body) == TD15_SIZE:
            fields["tee_tcb_svn2"] = bytes(body[584:600])
            fields["mr_service_td"] = bytes(body[600:648])
        return cls(**fields)

    @property
    def debug(self) -> bool:
        """True when the TD runs in debug mode (its memory is readable by the host)."""
        return bool(self.td_attributes[0] & TD_ATTR_DEBUG)


@dataclass(frozen=True, slots=True)
class TdxQuote:
    """A parsed DCAP TDX quote: header fields, TD report, PCK chain (PEM, leaf first)."""

    version: int
    tee_type: int
    qe_vendor_id: bytes
    report: TdReport
    pck_chain_pem: bytes
    pck_chain: tuple[x509.Certificate, ...] = field(repr=False)  # pck_chain_pem, parsed once
    signed_region: bytes = field(repr=False, default=b"")  # header ‖ body (v5: ‖ type, size)
    signature: bytes = field(repr=False, default=b"")  # quote signature, raw P-256 r ‖ s
    attestation_key: bytes = field(repr=False, default=b"")  # raw P-256 x ‖ y
    qe_report: bytes = field(repr=False, default=b"")  # 384-byte SGX report of the QE
    qe_report_signature: bytes = field(repr=False, default=b"")
    qe_auth_data: bytes = field(repr=False, default=b"")

    @classmethod
    def from_bytes(cls, quote: bytes) -> TdxQuote:
        """Parse a v4 or v5 TDX quote.

        Raises:
            ProtocolError: Not a TDX ECDSA-P256 quote, or malformed / truncated.
        """
        data = bytes(quote)
        if len(data) < HEADER_SIZE + TD10_SIZE + 4:
            raise ProtocolError("tdx: quote too short")
        version, key_type, tee_type = struct.unpack_from("<HHI", data, 0)
        if version not in {4, 5} or key_type != ECDSA_P256 or tee_type != TDX_TEE_TYPE:
            raise ProtocolError("tdx: not a v4/v5 ECDSA-P256 TDX quote")
        if version == 4:
            body_start, body_size = HEADER_SIZE, TD10_SIZE
        else:
            body_type, body_size = struct.unpack_from("<HI", data, HEADER_SIZE)
            if (body_type, body_size) not in {(BODY_TD10, TD10_SIZE), (BODY_TD15, TD15_SIZE)}:
                raise ProtocolError("tdx: unsupported v5 body type")
            body_start = HEADER_SIZE + 6
        body_end = body_start + body_size
        report = TdReport.from_bytes(data[body_start:body_end])
        sig, inner, auth, pem, chain = _signature_data(data, body_end)
        return cls(
            version=version,
            tee_type=tee_type,
            qe_vendor_id=data[12:28],
            report=report,
            pck_chain_pem=pem,
            pck_chain=chain,
            signed_region=data[:body_end],
            signature=sig[:64],
            attestation_key=sig[64:128],
            qe_report=inner[:QE_REPORT_SIZE],
            qe_report_signature=inner[QE_REPORT_SIZE : QE_REPORT_SIZE + 64],
            qe_auth_data=auth,
        )


def _signature_data(
    data: bytes, pos: int
) -> tuple[bytes, bytes, bytes, bytes, tuple[x509.Certificate, ...]]:
    """Walk signature data → certification data (type 6: QE report) → type 5 PEM chain."""
    try:
        (sig_len,) = struct.unpack_from("<I", data, pos)
        sig = data[pos + 4 : pos + 4 + sig_len]
        if len(sig) != sig_len:
            raise ProtocolError("tdx: truncated signature data")
        cert_type, cert_size = struct.unpack_from("<HI", sig, 128)
        if cert_type != CERT_QE_REPORT or 134 + cert_size != len(sig):
            raise ProtocolError("tdx: certification data is not exactly one QE report")
        inner = sig[134 : 134 + cert_size]
        (auth_len,) = struct.unpack_from("<H", inner, QE_REPORT_SIZE + 64)
        at = QE_REPORT_SIZE + 64 + 2 + auth_len
        pck_type, pck_size = struct.unpack_from("<HI", inner, at)
    except struct.error as exc:
        raise ProtocolError("tdx: truncated signature data") from exc
    pem = inner[at + 6 :]
    if pck_type != CERT_PCK_CHAIN or len(pem) != pck_size:
        raise ProtocolError("tdx: no PCK certificate chain filling the certification data")
    return sig, inner, inner[QE_REPORT_SIZE + 66 : at], *_canonical_pem(pem)


def _canonical_pem(pem: bytes) -> tuple[bytes, tuple[x509.Certificate, ...]]:
    """Accept only the chain's canonical PEM (plus one trailing NUL, as real QEs emit it).

    PEM text is not signed; insisting on the canonical encoding makes the quote bytes
    non-malleable (a changed newline or dash would otherwise still verify).
    """
    chain = parse_pem_chain(pem)
    canonical = b"".join(c.public_bytes(Encoding.PEM) for c in chain)
    if pem not in {canonical, canonical + b"\x00"}:
        raise ProtocolError("tdx: PCK chain is not canonical PEM")
    return canonical, tuple(chain)


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
    step = "parse"
    try:
        parsed = TdxQuote.from_bytes(quote)
        coll = load_collateral(collateral)
        report.ok(step, f"quote v{parsed.version}, TD report {_td_kind(parsed)}")
        step = "intel root"
        root = load_intel_root()
        _check_root(parsed, root)
        report.ok(step, "PCK chain ends in the pinned Intel SGX Root CA")
        step = "dcap-qvl"
        verified = _dcap_verify(quote, coll, root, now)
        report.ok(step, "quote, QE report, PCK chain, CRLs, TCB info and QE identity verify")
        step = "agreement"
        _check_agreement(parsed.report, verified)
        report.ok(step, "dcap-qvl's TD report equals our parse")
    except (ProtocolError, VerificationError) as exc:
        raise report.fail(step, str(exc)) from exc
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
    step = "parse"
    try:
        q = TdxQuote.from_bytes(quote)
        report.ok(step, f"quote v{q.version}, TD report {_td_kind(q)}")
        step = "pck chain"
        verify_chain(q.pck_chain, load_intel_root(), now=now)
        report.ok(step, "PCK chain to the pinned Intel SGX Root CA, valid at this time")
        step = "qe report"
        _p256_verify(public_key(q.pck_chain[0]), q.qe_report_signature, q.qe_report)
        report.ok(step, "QE report signed by the PCK key")
        step = "qe binding"
        _check_qe_binding(q)
        report.ok(step, "QE report_data = SHA-256(attestation key ‖ QE auth data) ‖ 0^32")
        step = "quote signature"
        point = b"\x04" + q.attestation_key
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise VerificationError("attestation key is not a P-256 point") from exc
        _p256_verify(key, q.signature, q.signed_region)
        report.ok(step, "header and TD report signed by the attestation key")
    except (ProtocolError, VerificationError) as exc:
        raise report.fail(step, str(exc)) from exc
    report.ok("collateral", "NOT checked: no PCS collateral (TCB status, CRLs, QE identity)")
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
