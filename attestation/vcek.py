"""The AMD extensions of a VCEK certificate: the TCB it was issued for, the chip id, the product.

AMD's KDS issues one VCEK per (chip, TCB). The TCB a verifier trusts is the one in these
certificate extensions, never the report's self-claimed TCB fields (SECURITY.md A6).

Extensions (AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification", table "VCEK certificate extensions"), prefix 1.3.6.1.4.1.3704.1:
  .1 structVersion, .2 productName (IA5String, e.g. `Milan-B0`), .3.1 blSPL, .3.2 teeSPL,
  .3.3 snpSPL, .3.4-.3.7 reserved SPLs, .3.8 ucodeSPL, .3.9 fmcSPL (Turin), .4 hwID (the 64-byte
  chip id, raw octets).

Invariants: pure (DER in, frozen values out); any malformed input raises `ProtocolError`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from attestation.x509chain import require_canonical_signature
from hushcc.errors import ProtocolError

_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{_AMD}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD}.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{_AMD}.3.9")
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")

# Products whose TCB_VERSION has the Turin layout (FMC SPL first).
_TURIN_LAYOUT = frozenset({"Turin"})


@dataclass(frozen=True, slots=True, order=True)
class TcbVersion:
    """The security patch levels of an SNP platform (one byte each)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int = 0

    @classmethod
    def from_u64(cls, raw: int, product: str) -> TcbVersion:
        """Decode a little-endian TCB_VERSION; the byte layout depends on the product.

        Milan/Genoa: byte0 bootloader, byte1 tee, bytes 2-5 reserved, byte6 snp, byte7 microcode.
        Turin: byte0 fmc, byte1 bootloader, byte2 tee, byte3 snp, bytes 4-6 reserved, byte7 ucode.

        Args:
            raw: The 64-bit field as read from the report.
            product: The product family (`Milan`, `Genoa`, `Turin`).

        Returns:
            The decoded version.
        """
        b = raw.to_bytes(8, "little")
        if product in _TURIN_LAYOUT:
            return cls(bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def to_u64(self, product: str) -> int:
        """Encode as the report's little-endian TCB_VERSION (inverse of `from_u64`)."""
        b = bytearray(8)
        if product in _TURIN_LAYOUT:
            b[0], b[1], b[2], b[3], b[7] = (
                self.fmc, self.bootloader, self.tee, self.snp, self.microcode)
        else:
            b[0], b[1], b[6], b[7] = self.bootloader, self.tee, self.snp, self.microcode
        return int.from_bytes(b, "little")

    def __str__(self) -> str:
        """Render as `bl B tee T snp S ucode U[ fmc F]`."""
        fmc = f" fmc {self.fmc}" if self.fmc else ""
        return f"bl {self.bootloader} tee {self.tee} snp {self.snp} ucode {self.microcode}{fmc}"

    def components(self) -> dict[str, int]:
        """The named SPLs, for step-by-step comparison."""
        return {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp,
                "microcode": self.microcode, "fmc": self.fmc}


@dataclass(frozen=True, slots=True)
class VcekInfo:
    """A parsed VCEK: the certificate and what AMD's extensions say about the chip."""

    certificate: x509.Certificate
    product_name: str
    product: str
    hwid: bytes
    tcb: TcbVersion


def load_der_certificate(der: bytes) -> x509.Certificate:
    """Parse one DER certificate, tolerating the non-positive serials AMD's KDS issued.

    Args:
        der: The DER bytes.

    Returns:
        The certificate.

    Raises:
        ProtocolError: Not a parseable X.509 certificate.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
            # pyca parses some fields lazily: touch every one a verifier reads, so a malformed
            # certificate fails here, as a ProtocolError, and never later with a ValueError.
            _ = (cert.issuer, cert.subject, cert.extensions, cert.signature_hash_algorithm,
                 cert.signature_algorithm_parameters, cert.not_valid_before_utc,
                 cert.not_valid_after_utc, cert.public_key(), cert.tbs_certificate_bytes)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise ProtocolError("certificate is not valid DER X.509") from exc
    require_canonical_signature(cert)
    return cert


def _der_integer(value: bytes) -> int:
    # A DER INTEGER of 1..8 content bytes, non-negative (SPLs are 0..255).
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2 or value[1] > 8:
        raise ProtocolError("AMD SPL extension is not a small DER INTEGER")
    number = int.from_bytes(value[2:], "big", signed=True)
    if not 0 <= number <= 255:
        raise ProtocolError("AMD SPL extension is out of range 0..255")
    return number


def _der_ia5(value: bytes) -> str:
    if len(value) < 2 or value[0] != 0x16 or value[1] != len(value) - 2 or value[1] > 127:
        raise ProtocolError("AMD productName extension is not a short IA5String")
    try:
        return value[2:].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("AMD productName extension is not ASCII") from exc


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or malformed extensions
        raise ProtocolError("certificate extensions are malformed") from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ProtocolError("AMD extension has an unexpected type")
    return value.value


def parse_vcek(der: bytes) -> VcekInfo:
    """Parse a VCEK certificate and its AMD extensions.

    Args:
        der: The VCEK certificate, DER.

    Returns:
        The certificate with its product, hwID and TCB.

    Raises:
        ProtocolError: Not a certificate, or an AMD extension is missing or malformed.
    """
    cert = load_der_certificate(der)
    name_raw = _ext(cert, OID_PRODUCT_NAME)
    hwid = _ext(cert, OID_HWID)
    if name_raw is None or hwid is None:
        raise ProtocolError("VCEK lacks the productName or hwID extension")
    product_name = _der_ia5(name_raw)
    product = product_name.split("-", 1)[0]
    if len(hwid) != 64:
        raise ProtocolError("VCEK hwID extension is not 64 bytes")
    spls: dict[str, int] = {}
    for key, oid in (("bootloader", OID_BL_SPL), ("tee", OID_TEE_SPL), ("snp", OID_SNP_SPL),
                     ("microcode", OID_UCODE_SPL)):
        raw = _ext(cert, oid)
        if raw is None:
            raise ProtocolError("VCEK lacks a TCB (SPL) extension")
        spls[key] = _der_integer(raw)
    fmc_raw = _ext(cert, OID_FMC_SPL)
    if product in _TURIN_LAYOUT and fmc_raw is None:
        raise ProtocolError("Turin VCEK lacks the fmcSPL extension")
    fmc = _der_integer(fmc_raw) if fmc_raw is not None else 0
    return VcekInfo(cert, product_name, product, hwid, TcbVersion(**spls, fmc=fmc))
