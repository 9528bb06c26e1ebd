"""OCSP revocation source: only a fully validated answer counts; everything else is UNKNOWN.

Responses are signed locally with cryptography's OCSPResponseBuilder (RFC 6960 structures), so
each check — signer, CertID, nonce, freshness, status — is exercised with a positive twin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation.gpu import GpuPolicy, RevocationStatus, verify_gpu_evidence
from attestation.gpu.ocsp import NVIDIA_OCSP_URL, CachedOcspSource, OcspRevocationSource
from attestation.gpu.simulated import SimulatedGpu
from attestation.report import AttestationError

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
NONCE = b"\x5a" * 32


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    ocsp_signing: bool = False,
) -> x509.Certificate:
    iname, ikey = issuer or (cn, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, iname)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ocsp_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return builder.sign(ikey, hashes.SHA384())


@dataclass
class Pki:
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    leaf_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    def __post_init__(self) -> None:
        self.ca = _cert("test CA", self.ca_key, ca=True)
        self.leaf = _cert("test leaf", self.leaf_key, ("test CA", self.ca_key))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _response(
    pki: Pki,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    nonce: bytes | None = NONCE,
    this_update: dt.datetime = NOW - dt.timedelta(hours=1),
    next_update: dt.datetime | None = NOW + dt.timedelta(days=1),
    signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    cert: x509.Certificate | None = None,
) -> bytes:
    responder_cert, responder_key = signer or (pki.ca, pki.ca_key)
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert or pki.leaf,
        issuer=pki.ca,
        algorithm=hashes.SHA384(),
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=NOW - dt.timedelta(days=2)
        if status is ocsp.OCSPCertStatus.REVOKED
        else None,
        revocation_reason=None,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert)
    if signer is not None:
        builder = builder.certificates([responder_cert])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    resp = builder.sign(responder_key, hashes.SHA384())
    return resp.public_bytes(serialization.Encoding.DER)


class Fetcher:
    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer
        self.requests: list[tuple[str, bytes]] = []

    def post(self, url: str, request: bytes) -> bytes:
        self.requests.append((url, request))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _status(pki: Pki, answer: bytes | Exception) -> RevocationStatus:
    fetcher = Fetcher(answer)
    source = OcspRevocationSource(fetcher, nonce=lambda: NONCE)
    result = source.status(pki.leaf, pki.ca, now=NOW)
    url, raw = fetcher.requests[0]
    request = ocsp.load_der_ocsp_request(raw)
    assert url == NVIDIA_OCSP_URL
    assert request.serial_number == pki.leaf.serial_number
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    return result


def test_good_answer_is_good(pki: Pki) -> None:
    assert _status(pki, _response(pki)) is RevocationStatus.GOOD


def test_revoked_answer_is_revoked(pki: Pki) -> None:
    assert _status(pki, _response(pki, status=ocsp.OCSPCertStatus.REVOKED)) is (
        RevocationStatus.REVOKED
    )


def test_delegated_responder_with_eku_accepted(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    responder = _cert("responder", key, ("test CA", pki.ca_key), ocsp_signing=True)
    assert _status(pki, _response(pki, signer=(responder, key))) is RevocationStatus.GOOD


OTHER_KEY = ec.generate_private_key(ec.SECP384R1())


@pytest.mark.parametrize(
    "case",
    [
        "responder-unknown-status",
        "wrong-nonce",
        "no-nonce",
        "stale",
        "no-next-update",
        "from-the-future",
        "self-signed-stranger",
        "delegate-without-eku",
        "other-certificate",
        "fetch-fails",
        "garbage",
    ],
)
def test_anything_not_fully_valid_is_unknown(pki: Pki, case: str) -> None:
    stranger = _cert("stranger", OTHER_KEY)
    answers: dict[str, bytes | Exception] = {
        "responder-unknown-status": _response(pki, status=ocsp.OCSPCertStatus.UNKNOWN),
        "wrong-nonce": _response(pki, nonce=b"\x00" * 32),
        "no-nonce": _response(pki, nonce=None),
        "stale": _response(pki, next_update=NOW - dt.timedelta(minutes=1)),
        "no-next-update": _response(pki, next_update=None),
        "from-the-future": _response(pki, this_update=NOW + dt.timedelta(hours=1)),
        "self-signed-stranger": _response(pki, signer=(stranger, OTHER_KEY)),
        "delegate-without-eku": _response(
            pki, signer=(_cert("d", OTHER_KEY, ("test CA", pki.ca_key)), OTHER_KEY)
        ),
        "other-certificate": _response(pki, cert=_cert("x", OTHER_KEY, ("test CA", pki.ca_key))),
        "fetch-fails": OSError("connection refused"),
        "garbage": b"\x30\x03\x0a\x01\x00",
    }
    assert _status(pki, answers[case]) is RevocationStatus.UNKNOWN


def test_ocsp_source_drives_the_gpu_revocation_step() -> None:
    sim = SimulatedGpu()
    evidence, certs = sim.attest(NONCE)
    policy = GpuPolicy(reference_measurements=sim.reference_measurements())

    class Responder:
        """Answers for the simulated chain, signed by each certificate's issuer."""

        def __init__(self, revoke_depth: int | None) -> None:
            self.revoke_depth = revoke_depth

        def post(self, url: str, request: bytes) -> bytes:
            req = ocsp.load_der_ocsp_request(request)
            chain = [x509.load_der_x509_certificate(c) for c in certs]
            depth = next(i for i, c in enumerate(chain) if c.serial_number == req.serial_number)
            revoked = depth == self.revoke_depth
            builder = ocsp.OCSPResponseBuilder().add_response(
                cert=chain[depth],
                issuer=chain[depth + 1],
                algorithm=hashes.SHA384(),
                cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                this_update=NOW - dt.timedelta(hours=1),
                next_update=NOW + dt.timedelta(hours=1),
                revocation_time=NOW - dt.timedelta(days=1) if revoked else None,
                revocation_reason=None,
            )
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, chain[depth + 1])
            builder = builder.add_extension(
                req.extensions.get_extension_for_class(x509.OCSPNonce).value, critical=False
            )
            issuer_key = sim._keys[depth + 1]
            return builder.sign(issuer_key, hashes.SHA384()).public_bytes(
                serialization.Encoding.DER
            )

    def run(revoke_depth: int | None) -> None:
        verify_gpu_evidence(
            evidence,
            certs,
            expected_nonce=NONCE,
            policy=policy,
            now=NOW,
            allow_simulated=True,
            revocation=OcspRevocationSource(Responder(revoke_depth)),
        )

    run(None)  # positive twin: every certificate good
    with pytest.raises(AttestationError) as err:
        run(0)
    failure = err.value.report.first_failure
    assert failure is not None
    assert (failure.name, failure.reason) == ("revocation", "certificate at depth 0 is revoked")


# Cached answers (issue 9 item 8): no nonce to echo, so freshness is this/next_update alone.
@pytest.mark.parametrize(("case", "expected"), [
    pytest.param("good", RevocationStatus.GOOD, id="good"),
    pytest.param("revoked", RevocationStatus.REVOKED, id="revoked"),
    pytest.param("stale", RevocationStatus.UNKNOWN, id="stale"),
    pytest.param("other-cert", RevocationStatus.UNKNOWN, id="missing"),
    pytest.param("forged", RevocationStatus.UNKNOWN, id="wrong-signer"),
])
def test_cached_ocsp_answers(pki: Pki, case: str, expected: RevocationStatus) -> None:
    other_key = ec.generate_private_key(ec.SECP384R1())
    answer = {
        "good": lambda: _response(pki, nonce=None),
        "revoked": lambda: _response(pki, nonce=None, status=ocsp.OCSPCertStatus.REVOKED),
        "stale": lambda: _response(pki, nonce=None, this_update=NOW - dt.timedelta(days=3),
                                   next_update=NOW - dt.timedelta(days=1)),
        "other-cert": lambda: _response(pki, nonce=None, cert=_cert(
            "other leaf", other_key, ("test CA", pki.ca_key))),
        "forged": lambda: _response(pki, nonce=None, signer=(
            _cert("test CA", other_key, ca=True), other_key)),
    }[case]()
    assert CachedOcspSource((answer,)).status(pki.leaf, pki.ca, now=NOW) is expected
    assert CachedOcspSource(()).status(pki.leaf, pki.ca, now=NOW) is RevocationStatus.UNKNOWN


def test_cached_ocsp_unknown_fails_only_when_required(pki: Pki) -> None:
    sim = SimulatedGpu()
    evidence, certs = sim.attest(NONCE)
    policy = GpuPolicy(reference_measurements=sim.reference_measurements())

    def run(*, required: bool) -> list[str]:
        report = verify_gpu_evidence(evidence, certs, expected_nonce=NONCE, policy=policy,
                                     now=NOW, allow_simulated=True,
                                     revocation=CachedOcspSource(()),
                                     revocation_required=required)
        return [s.name for s in report.warnings]

    assert run(required=False) == ["revocation"]  # best-effort: a warning, not a pass
    with pytest.raises(AttestationError) as err:
        run(required=True)
    assert err.value.report.first_failure is not None
    assert err.value.report.first_failure.name == "revocation"
