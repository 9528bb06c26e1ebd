"""`x509chain.materialize`: a certificate whose fields do not parse fails typed, never foreign.

Regression: a certificate carrying one extension twice made cryptography raise its own
`DuplicateExtension` (not a ValueError) out of the TDX quote parser (found by test_gpu_fuzz).
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.x509chain import materialize
from hushcc.errors import ProtocolError

KEY_USAGE_OID = bytes.fromhex("0603551d0f")  # 2.5.29.15, DER
SUBJECT_KEY_ID_OID = bytes.fromhex("0603551d0e")  # 2.5.29.14: same length, so no DER length moves


def _certificate_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "materialize")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier(b"\x01" * 20), critical=False)
            .add_extension(usage, critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def test_a_certificate_with_a_duplicate_extension_fails_as_a_protocol_error() -> None:
    der = _certificate_der()
    assert der.count(KEY_USAGE_OID) == 1
    twice = x509.load_der_x509_certificate(der.replace(KEY_USAGE_OID, SUBJECT_KEY_ID_OID))
    with pytest.raises(x509.DuplicateExtension):
        _ = twice.extensions  # what escaped before: cryptography's own error
    with pytest.raises(ProtocolError, match="does not parse"):
        materialize([twice])


def test_the_same_certificate_without_the_duplicate_materializes() -> None:
    cert = x509.load_der_x509_certificate(_certificate_der())
    assert materialize([cert]) == [cert]
