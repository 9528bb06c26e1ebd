"""A simulated H100 for development and tests: real SPDM format, a locally generated chain.

`SimulatedGpu` owns a P-384 device chain shaped like NVIDIA's (root → intermediate →
attestation key) whose root's common name is `SIMULATED_ROOT_CN`; it answers a 32-byte nonce
with evidence in exactly the H100 SPDM GET_MEASUREMENTS format, so it goes through the same
parser and verifier (`verify_gpu_evidence`) as a real GPU. Its root is not NVIDIA's: the
verifier trusts it only with `allow_simulated=True`.

Measurements: 64 SHA-384 blocks derived from a label; block `SIM_CC_MODE_INDEX` stands for the
CC-mode firmware configuration and differs when the GPU is "not in CC mode", so the reference
values (`reference_measurements()`, the simulated RIM) reject it exactly as real RIMs would.

Not pure: key generation and responder nonces use the OS RNG (a simulator, never a verifier).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.gpu.anchors import DICE_TCB_INFO, SIMULATED_ROOT_CN
from attestation.gpu.spdm import (
    DMTF_MEASUREMENT_SPEC,
    OPAQUE_DRIVER_VERSION,
    OPAQUE_FWID,
    OPAQUE_VBIOS_VERSION,
    MeasurementBlock,
    build_evidence,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

SIM_BLOCKS = 64
SIM_CC_MODE_INDEX = 1
DMTF_RAW_DIGEST = 0x01  # DMTF measurement value type as H100 reports it
_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


def _measurement(index: int, *, cc_mode: bool, label: bytes) -> bytes:
    if index == SIM_CC_MODE_INDEX:
        return hashlib.sha384(b"hushcc/sim-gpu/cc-mode/" + (b"on" if cc_mode else b"off")).digest()
    return hashlib.sha384(label + index.to_bytes(2, "big")).digest()


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hushcc simulated"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def dice_tcb_info(fwid: bytes) -> bytes:
    """A minimal DER TCG DICE TcbInfo holding one SHA-384 FWID (fwids [6]), as H100 leaves do."""
    digest = b"\x06\x09" + bytes.fromhex("608648016503040202") + b"\x04\x30" + fwid
    fwid_seq = b"\x30" + bytes([len(digest)]) + digest
    fwids = b"\xa6" + bytes([len(fwid_seq)]) + fwid_seq
    return b"\x30" + bytes([len(fwids)]) + fwids


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    fwid: bytes | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = x509.CertificateBuilder()
    if fwid is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(DICE_TCB_INFO, dice_tcb_info(fwid)), critical=False
        )
    return (
        builder.subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )


@dataclass(slots=True)
class SimulatedGpu:
    """A simulated H100 with its own P-384 device chain.

    Attributes:
        cc_mode: Whether the simulated GPU is in confidential-computing mode.
        driver_version: Reported in the opaque DRIVER_VERSION field.
        vbios: The 5 VBIOS version bytes in NVIDIA's dotted print order (b3.b2.b1.b0.b4).
        label: Distinguishes simulated firmware builds (changes every measurement but CC).
    """

    cc_mode: bool = True
    driver_version: str = "550.90.07"
    vbios: tuple[int, int, int, int, int] = (0x96, 0x00, 0x9F, 0x00, 0x01)
    label: bytes = b"hushcc/sim-gpu/firmware/v1"
    _keys: list[ec.EllipticCurvePrivateKey] = field(default_factory=list, repr=False)
    _chain: list[x509.Certificate] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        """Generate root → intermediate → attestation key (P-384 like NVIDIA's)."""
        root_k, ica_k, ak_k = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
        root = _cert(SIMULATED_ROOT_CN, root_k, None, ca=True)
        ica = _cert("hushcc SIMULATED GPU ICA", ica_k, (SIMULATED_ROOT_CN, root_k), ca=True)
        leaf = _cert(
            "hushcc SIMULATED GPU attestation key",
            ak_k,
            ("hushcc SIMULATED GPU ICA", ica_k),
            ca=False,
            fwid=self.fwid,
        )
        self._keys = [ak_k, ica_k, root_k]
        self._chain = [leaf, ica, root]

    @property
    def fwid(self) -> bytes:
        """The simulated firmware id (SHA-384), in the leaf's DICE TcbInfo and in the report."""
        return hashlib.sha384(self.label + b"/fwid").digest()

    @property
    def cert_chain(self) -> list[bytes]:
        """The device chain as DER, leaf first, root last."""
        return [c.public_bytes(Encoding.DER) for c in self._chain]

    @property
    def vbios_version(self) -> str:
        """The VBIOS version as the verifier prints it."""
        return ".".join(f"{b:02x}" for b in self.vbios)

    def attest(
        self, nonce: bytes, *, responder_nonce: bytes | None = None
    ) -> tuple[bytes, list[bytes]]:
        """Answer a GET_MEASUREMENTS request for `nonce`.

        Args:
            nonce: The 32-byte requester nonce.
            responder_nonce: 32 bytes; random when omitted.

        Returns:
            `(evidence_bytes, cert_chain_der_list)` as a bundle GPU entry carries them.

        Raises:
            ProtocolError: The nonce is not 32 bytes.
        """
        blocks = tuple(
            MeasurementBlock(
                i,
                DMTF_MEASUREMENT_SPEC,
                DMTF_RAW_DIGEST,
                _measurement(i, cc_mode=self.cc_mode, label=self.label),
            )
            for i in range(1, SIM_BLOCKS + 1)
        )
        b3, b2, b1, b0, b4 = self.vbios
        opaque = (
            (OPAQUE_DRIVER_VERSION, self.driver_version.encode("ascii") + b"\x00"),
            (OPAQUE_VBIOS_VERSION, bytes([b0, b1, b2, b3, b4, 0, 0, 0])),
            (OPAQUE_FWID, self.fwid),
        )
        evidence = build_evidence(
            nonce=nonce,
            blocks=blocks,
            responder_nonce=responder_nonce if responder_nonce is not None else os.urandom(32),
            opaque=opaque,
            sign=self._keys[0],
        )
        return evidence, self.cert_chain

    def reference_measurements(self) -> Mapping[int, tuple[bytes, ...]]:
        """The simulated RIM: every block's CC-mode-on reference value (SPDM index → digests)."""
        return MappingProxyType(
            {
                i: (_measurement(i, cc_mode=True, label=self.label),)
                for i in range(1, SIM_BLOCKS + 1)
            }
        )
