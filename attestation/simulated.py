"""The simulated TEE: real SEV-SNP reports, signed by a locally generated ARK -> ASK -> VCEK.

For development and tests where no TEE exists. Reports use the exact SEV-SNP format
(`attestation.sevsnp`) and go through the same verifier (`verify_snp_report`) as AMD's; only the
trust anchor differs. The chain is ECDSA P-384 throughout (AMD's ARK/ASK are RSA-4096 with
RSASSA-PSS; the verifier checks each signature by the signer's key type, so both take the same
code path). The VCEK carries AMD's extensions (productName `Milan-B0`, TCB SPLs, hwID) so the
TCB and chip-id checks run unchanged.

Invariants:
* The simulated root is never trusted by default: `amd_trust()` does not contain it, and a
  bundle verifier uses `simulated_trust_from_certs` only when its caller injects
  `WITH_SIMULATED` (tests, the demo, `attest verify` with a policy allowing simulated TEEs) and
  the policy allows simulated TEEs.
* It proves nothing about isolation: its keys live in ordinary process memory.
* Pure apart from key generation (OS randomness, through pyca); time is a parameter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation import vcek as ext
from attestation.amd import AMD_TRUST, CpuTrust, SnpTrust
from attestation.sevsnp import (
    POLICY_DEBUG_BIT,
    POLICY_RESERVED_ONE_BIT,
    blank_report,
    encode_signature,
)
from attestation.vcek import TcbVersion, load_der_certificate
from hushcc.errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

PRODUCT = "Milan"
PRODUCT_NAME = "Milan-B0"
ARK_CN = "hushcc simulated ARK-Milan"
ASK_CN = "hushcc simulated SEV-Milan"
VCEK_CN = "hushcc simulated SEV-VCEK"
DEFAULT_TCB = TcbVersion(bootloader=4, tee=0, snp=22, microcode=213)
_GUEST_POLICY = (1 << 16) | POLICY_RESERVED_ONE_BIT  # SMT allowed, reserved bit 17 set


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hushcc simulated TEE"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _der_int(value: int) -> bytes:
    body = value.to_bytes(2, "big") if value > 127 else bytes([value])
    return bytes([0x02, len(body)]) + body


def _amd_extensions(tcb: TcbVersion, chip_id: bytes) -> list[x509.UnrecognizedExtension]:
    name = PRODUCT_NAME.encode()
    values = [(ext.OID_STRUCT_VERSION, _der_int(1)),
              (ext.OID_PRODUCT_NAME, bytes([0x16, len(name)]) + name),
              (ext.OID_BL_SPL, _der_int(tcb.bootloader)), (ext.OID_TEE_SPL, _der_int(tcb.tee)),
              (ext.OID_SNP_SPL, _der_int(tcb.snp)), (ext.OID_UCODE_SPL, _der_int(tcb.microcode)),
              (ext.OID_HWID, chip_id)]
    return [x509.UnrecognizedExtension(oid, value) for oid, value in values]


@dataclass(frozen=True, slots=True)
class Validity:
    """Not-before / not-after of one simulated certificate."""

    not_before: datetime
    not_after: datetime


def _certificate(  # noqa: PLR0913 - one certificate's fields
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey, validity: Validity, *, ca: bool,
    extensions: Sequence[x509.UnrecognizedExtension] = (),
) -> x509.Certificate:
    public = key.public_key()
    serial = int.from_bytes(hashlib.sha256(public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()[:16])
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public).serial_number(serial >> 1 or 1)
               .not_valid_before(validity.not_before).not_valid_after(validity.not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA384())


@dataclass(frozen=True, slots=True)
class SimulatedTee:
    """A simulated SEV-SNP platform: its keys, its certificate chain, its TCB and chip id."""

    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    chip_id: bytes
    tcb: TcbVersion
    _vcek_key: ec.EllipticCurvePrivateKey = field(repr=False)
    _ark_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(
        cls, *, now: datetime, tcb: TcbVersion = DEFAULT_TCB,
        lifetime: timedelta = timedelta(days=365), ask_validity: Validity | None = None,
        vcek_validity: Validity | None = None,
    ) -> SimulatedTee:
        """Generate a fresh ARK -> ASK -> VCEK chain (ECDSA P-384).

        Args:
            now: Certificates are valid from one hour before `now` for `lifetime`.
            tcb: The TCB the VCEK is issued for.
            lifetime: Default certificate lifetime.
            ask_validity: Override the ASK's validity (tests: an expired intermediate).
            vcek_validity: Override the VCEK's validity.

        Returns:
            The simulated platform.
        """
        default = Validity(now - timedelta(hours=1), now + lifetime)
        ark_key, ask_key, vcek_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
        chip_id = hashlib.sha512(vcek_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)).digest()
        ark = _certificate(ARK_CN, ARK_CN, ark_key, ark_key, default, ca=True)
        ask = _certificate(ASK_CN, ARK_CN, ask_key, ark_key, ask_validity or default, ca=True)
        vcek = _certificate(VCEK_CN, ASK_CN, vcek_key, ask_key, vcek_validity or default,
                            ca=False, extensions=_amd_extensions(tcb, chip_id))
        return cls(ark, ask, vcek, chip_id, tcb, vcek_key, ark_key)

    def certs(self) -> tuple[bytes, bytes, bytes]:
        """The chain as the bundle carries it: VCEK, ASK, ARK (DER)."""
        return tuple(c.public_bytes(serialization.Encoding.DER)  # type: ignore[return-value]
                     for c in (self.vcek, self.ask, self.ark))

    def crl(self, *, this_update: datetime, next_update: datetime,
            revoked: Sequence[int] = ()) -> bytes:
        """The ARK's CRL, as AMD's KDS serves it for a product (DER; tests of revocation).

        Args:
            this_update: The CRL's thisUpdate.
            next_update: The CRL's nextUpdate (a CRL past it is stale).
            revoked: Serial numbers to list as revoked (e.g. `self.ask.serial_number`).
        """
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.ark.subject)
                   .last_update(this_update).next_update(next_update))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(this_update).build())
        return builder.sign(self._ark_key, hashes.SHA384()).public_bytes(
            serialization.Encoding.DER)

    def trust(self) -> SnpTrust:
        """Trust anchors containing only this platform's simulated ARK."""
        return SnpTrust("simulated", MappingProxyType({PRODUCT: self.ark}), simulated=True)

    def report(  # noqa: PLR0913 - the guest-chosen fields of a report, plus test overrides
        self, report_data: bytes, measurement: bytes, *, debug: bool = False, vmpl: int = 0,
        version: int = 5, reported_tcb: TcbVersion | None = None, chip_id: bytes | None = None,
        guest_policy: int | None = None,
    ) -> bytes:
        """Produce a signed SEV-SNP report, as the firmware would for this guest.

        Args:
            report_data: 64 bytes chosen by the guest (the binding).
            measurement: The 48-byte launch measurement (the node's self-measurement).
            debug: Set the guest policy's debug bit.
            vmpl: The VMPL the request came from.
            version: Report version 2, 3 or 5.
            reported_tcb: Claim another TCB than the VCEK's (tests: A6).
            chip_id: Claim another chip id (tests: A7).
            guest_policy: The whole GUEST_POLICY value (tests; `debug` is then ignored).

        Returns:
            The 1184-byte signed report.

        Raises:
            ProtocolError: report_data or measurement has the wrong length.
        """
        if len(report_data) != 64 or len(measurement) != 48:
            raise ProtocolError("report_data must be 64 bytes and measurement 48 bytes")
        tcb = (reported_tcb or self.tcb).to_u64(PRODUCT)
        fields: dict[str, int | bytes] = {
            "guest_svn": 1, "policy": guest_policy if guest_policy is not None
            else _GUEST_POLICY | (POLICY_DEBUG_BIT if debug else 0),
            "vmpl": vmpl, "current_tcb": tcb, "reported_tcb": tcb, "committed_tcb": tcb,
            "launch_tcb": tcb, "platform_info": 1, "report_data": report_data,
            "measurement": measurement, "chip_id": chip_id or self.chip_id,
            "report_id": hashlib.sha256(report_data).digest(),
        }
        if version >= 3:
            fields |= {"cpuid_fam_id": 0x19, "cpuid_mod_id": 0x01, "cpuid_step": 0x01}
        unsigned = blank_report(version).replace(**fields)
        der = self._vcek_key.sign(unsigned.signed_bytes, ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        sig_r, sig_s = encode_signature(r, s)
        return unsigned.replace(signature_r=sig_r, signature_s=sig_s).to_bytes()


def simulated_trust_from_certs(certs: Sequence[bytes]) -> SnpTrust:
    """The simulated trust anchor a bundle names: its third certificate, a simulated ARK.

    Only for a verifier whose policy allows simulated TEEs; the chain checks that follow still
    verify the ARK's self-signature and every link below it.

    Args:
        certs: The bundle's CPU certificates (VCEK, ASK, ARK).

    Returns:
        Trust anchors holding that simulated ARK.

    Raises:
        ProtocolError: Three certificates are not given, or the third is not a simulated ARK.
    """
    if len(certs) != 3:
        raise ProtocolError("simulated evidence must carry VCEK, ASK and ARK")
    ark = load_der_certificate(certs[2])
    if ark.subject != _name(ARK_CN):
        raise ProtocolError("the simulated chain's root is not a hushcc simulated ARK")
    return SnpTrust("simulated", MappingProxyType({PRODUCT: ark}), simulated=True)


# CPU trust anchors for a verifier that may see simulated evidence (AMD's stay pinned).
WITH_SIMULATED: CpuTrust = MappingProxyType({**AMD_TRUST, "simulated": simulated_trust_from_certs})
