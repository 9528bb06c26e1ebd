"""Intel TDX quote (DCAP v4 / v5) parsing: header, TD report body, signature data, PCK chain.

Layout: Intel TDX DCAP Quote Generation Library, appendix A (v4: A.3, v5: A.4). The TD report
body is 584 bytes (TDX 1.0) or, in a v5 quote with body type 3, 648 bytes (TDX 1.5).

Parsing is strict: the certification data must exactly fill the signature data and the PCK
chain must be canonical PEM, so no byte of the signature data can change without rejection;
bytes after the signature data are outside the quote structure and ignored (real quotes carry
zero padding there; dcap-qvl and go-tdx-guest ignore them too).

Invariants: pure; parsers raise only `ProtocolError`. Verification is in `attestation.tdx`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from attestation.x509chain import parse_pem_chain
from hushcc.errors import ProtocolError

if TYPE_CHECKING:
    from cryptography import x509

HEADER_SIZE = 48
TDX_TEE_TYPE = 0x81
ECDSA_P256 = 2
TD10_SIZE = 584
TD15_SIZE = 648
BODY_TD10, BODY_TD15 = 2, 3
CERT_QE_REPORT, CERT_PCK_CHAIN = 6, 5
QE_REPORT_SIZE = 384
TD_ATTR_DEBUG = 0x01  # TUD.DEBUG, bit 0 of TDATTRIBUTES
# The registers a release entry pins for TDX, in this order: MRTD (initial TD memory) and the
# run-time registers the firmware and bootloader extend with the kernel, initrd and command line.
TDX_REGISTERS = ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
REGISTER_SIZE = 48
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


def tdx_measurement(report: TdReport) -> bytes:
    """The TDX launch measurement a release entry lists: MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ RTMR3."""
    return b"".join(getattr(report, name) for name in TDX_REGISTERS)
