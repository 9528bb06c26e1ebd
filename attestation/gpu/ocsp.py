"""An OCSP `RevocationSource` (RFC 6960) for NVIDIA device and RIM certificates.

NVIDIA answers OCSP for GPU device chains and RIM signing chains at `NVIDIA_OCSP_URL` (the URL
nvtrust uses; the certificates carry no AIA). The HTTP POST goes through an injected
`OcspFetcher`, so this module stays free of sockets and testable with locally signed responses.

`CachedOcspSource` answers from OCSP responses fetched earlier (a cache directory a node or
client refreshes out of band): the same checks except the nonce (a cached answer cannot echo a
fresh one), so its freshness rests on `this_update` / `next_update` alone; a missing or stale
answer is `UNKNOWN`.

For each (certificate, issuer) it sends a request with a fresh nonce and accepts the answer
only when (RFC 6960 §3.2): the response status is successful; it is signed by the issuer or by
a responder certificate the issuer issued with the OCSPSigning EKU; it names this exact
certificate (serial, issuer name and key hashes); it echoes our nonce; `this_update <= now`
(with `clock_skew`) and `now <= next_update`. Anything else — a fetch error included — is
`UNKNOWN`, which the chain check treats as a failure (fail closed).

Not pure: the nonce comes from the OS RNG unless a `nonce` function is given; time is a
parameter of `status`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.x509chain import RevocationStatus

if TYPE_CHECKING:
    from collections.abc import Callable

NVIDIA_OCSP_URL = "https://ocsp.ndis.nvidia.com/"


class OcspFetcher(Protocol):
    """POSTs a DER OCSP request and returns the DER response (`application/ocsp-*`)."""

    def post(self, url: str, request: bytes) -> bytes:
        """Send `request` to `url`; raise on any transport failure."""
        ...


@dataclass(frozen=True, slots=True)
class OcspRevocationSource:
    """Asks an OCSP responder about each certificate; fails closed to UNKNOWN.

    Attributes:
        fetcher: The HTTP seam.
        url: The responder URL (NVIDIA's by default).
        clock_skew: Tolerance for a responder clock slightly ahead of ours.
        nonce: Returns the 32-byte request nonce (random by default).
    """

    fetcher: OcspFetcher
    url: str = NVIDIA_OCSP_URL
    clock_skew: dt.timedelta = dt.timedelta(minutes=5)
    nonce: Callable[[], bytes] = field(default=lambda: os.urandom(32))

    def status(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, now: dt.datetime
    ) -> RevocationStatus:
        """Return GOOD / REVOKED only for a fully validated answer, else UNKNOWN."""
        nonce = self.nonce()
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuer, hashes.SHA384())
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
        )
        try:
            raw = self.fetcher.post(self.url, request.public_bytes(serialization.Encoding.DER))
        except Exception:  # noqa: BLE001 - any transport failure means "unknown", never "good"
            return RevocationStatus.UNKNOWN
        try:
            response = ocsp.load_der_ocsp_response(raw)
            if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                return RevocationStatus.UNKNOWN
            if not (
                _signed_by_issuer_or_delegate(response, issuer, now)
                and _names(response, cert, issuer)
                and _fresh(response, now, self.clock_skew)
                and _nonce_echoed(response, nonce)
            ):
                return RevocationStatus.UNKNOWN
            return _STATUS[response.certificate_status]
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
            return RevocationStatus.UNKNOWN


@dataclass(frozen=True, slots=True)
class CachedOcspSource:
    """A `RevocationSource` over cached DER OCSP responses (module docstring); no network.

    Attributes:
        responses: DER OCSP responses, any order; each names the certificate it is about.
        clock_skew: Tolerance for a responder clock slightly ahead of ours.
    """

    responses: tuple[bytes, ...]
    clock_skew: dt.timedelta = dt.timedelta(minutes=5)

    def status(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, now: dt.datetime
    ) -> RevocationStatus:
        """GOOD / REVOKED from a valid, fresh cached answer about `cert`; else UNKNOWN."""
        for raw in self.responses:
            try:
                response = ocsp.load_der_ocsp_response(raw)
                if (response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
                        and _names(response, cert, issuer)
                        and _signed_by_issuer_or_delegate(response, issuer, now)
                        and _fresh(response, now, self.clock_skew)):
                    return _STATUS[response.certificate_status]
            except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
                continue
        return RevocationStatus.UNKNOWN


_STATUS = {
    ocsp.OCSPCertStatus.GOOD: RevocationStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: RevocationStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: RevocationStatus.UNKNOWN,
}


def _verify(key: object, signature: bytes, data: bytes, algo: hashes.HashAlgorithm | None) -> bool:
    if not isinstance(key, ec.EllipticCurvePublicKey) or algo is None:
        return False  # NVIDIA's OCSP responders sign with ECDSA
    try:
        key.verify(signature, data, ec.ECDSA(algo))
    except InvalidSignature:
        return False
    return True


def _signed_by_issuer_or_delegate(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime
) -> bool:
    data, sig, algo = (
        response.tbs_response_bytes,
        response.signature,
        response.signature_hash_algorithm,
    )
    if _verify(issuer.public_key(), sig, data, algo):
        return True
    for responder in response.certificates:  # RFC 6960 §4.2.2.2: delegated responder
        try:
            responder.verify_directly_issued_by(issuer)
            eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        valid = responder.not_valid_before_utc <= now <= responder.not_valid_after_utc
        delegated = valid and ExtendedKeyUsageOID.OCSP_SIGNING in eku
        if delegated and _verify(responder.public_key(), sig, data, algo):
            return True
    return False


def _names(response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """The response's CertID equals the one we compute for (cert, issuer) with its hash."""
    if response.serial_number != cert.serial_number:
        return False
    expected = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, response.hash_algorithm)
    ours = expected.build()
    return hmac.compare_digest(response.issuer_key_hash, ours.issuer_key_hash) and (
        hmac.compare_digest(response.issuer_name_hash, ours.issuer_name_hash)
    )


def _fresh(response: ocsp.OCSPResponse, now: dt.datetime, skew: dt.timedelta) -> bool:
    if response.this_update_utc > now + skew:
        return False
    next_update = response.next_update_utc
    return next_update is not None and now <= next_update


def _nonce_echoed(response: ocsp.OCSPResponse, nonce: bytes) -> bool:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return False
    return hmac.compare_digest(echoed, nonce)
