"""Regression: a certificate whose signature BIT STRING claims unused bits is refused.

Found by tests/attestation/test_gpu_fuzz.py under CI's derandomized profile: flipping the
unused-bits octet from 0 to 1 left pyca reporting the same signature bytes (when the padding bit
happened to be zero), so a mutated certificate still verified. Both certificate loaders (GPU chains
and the AMD VCEK) now require DER's zero unused bits.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from attestation.gpu import GpuPolicy, verify_gpu_evidence
from attestation.gpu.simulated import SimulatedGpu
from attestation.report import AttestationError
from attestation.simulated import SimulatedTee
from attestation.vcek import load_der_certificate
from attestation.x509chain import parse_der_chain
from hushcc.errors import ProtocolError

NONCE = b"\x22" * 32
NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def _with_unused_bit(der: bytes) -> bytes | None:
    """Set the unused-bits octet to 1, or None when pyca would reject that anyway."""
    signature = x509.load_der_x509_certificate(der).signature
    at = der.rfind(b"\x00" + signature)
    mutated = der[:at] + b"\x01" + der[at + 1 :]
    try:
        x509.load_der_x509_certificate(mutated)
    except ValueError:
        return None
    return mutated


def _malleable_gpu() -> tuple[SimulatedGpu, bytes, list[bytes], bytes]:
    for _ in range(64):  # the padding bit is the signature's last bit: zero half of the time
        gpu = SimulatedGpu()
        evidence, certs = gpu.attest(NONCE)
        mutated = _with_unused_bit(certs[0])
        if mutated is not None:
            return gpu, evidence, list(certs), mutated
    pytest.fail("no simulated certificate with a zero padding bit in 64 tries")


def test_gpu_leaf_with_unused_bits_is_rejected_and_the_original_verifies():
    gpu, evidence, certs, mutated = _malleable_gpu()
    policy = GpuPolicy(reference_measurements=gpu.reference_measurements())
    report = verify_gpu_evidence(evidence, certs, expected_nonce=NONCE, policy=policy,
                                 now=NOW, allow_simulated=True)
    assert report.passed
    with pytest.raises(ProtocolError, match="unused bits"):
        parse_der_chain([mutated, *certs[1:]])
    with pytest.raises(AttestationError):
        verify_gpu_evidence(evidence, [mutated, *certs[1:]], expected_nonce=NONCE,
                            policy=policy, now=NOW, allow_simulated=True)


def test_vcek_with_unused_bits_is_rejected_and_the_original_loads():
    for _ in range(64):
        vcek = SimulatedTee.generate(now=NOW).certs()[0]
        mutated = _with_unused_bit(vcek)
        if mutated is not None:
            break
    else:
        pytest.fail("no simulated VCEK with a zero padding bit in 64 tries")
    assert load_der_certificate(vcek).serial_number > 0
    with pytest.raises(ProtocolError):
        load_der_certificate(mutated)


def test_vcek_loader_refuses_invalid_version_typed() -> None:
    """An X.509 version other than v1..v3 is a ProtocolError, not a bare InvalidVersion."""
    der = SimulatedTee.generate(now=NOW).certs()[0]
    at = der.find(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT version INTEGER 2 (v3)
    assert at > 0
    mutated = der[: at + 4] + b"\x05" + der[at + 5 :]
    with pytest.raises(ProtocolError):
        load_der_certificate(mutated)
    with pytest.raises(ProtocolError):
        parse_der_chain([mutated])
