"""X.509 chains: leaf → ... → pinned root, checked at a given time (the one module for all).

Used for GPU device chains (leaf = attestation key, root = NVIDIA Device Identity CA), RIM
signing chains (root = NVIDIA CoRIM signing Root CA), Intel PCK chains (`attestation.tdx`) and
the canonical-signature rule of AMD's VCEK chain (`attestation.vcek`). The pinned roots ship as
package data (`attestation/nvidia_roots/`, `amd_roots/`, `intel_roots/`), loaded by their users.

Invariants:
* Pure: time is a parameter; revocation is an injected `RevocationSource` (OCSP in production).
  Without one, the caller records that revocation was NOT checked — never a silent pass.
* The last certificate must be byte-identical to the pinned root; every certificate must be
  directly issued (name + signature) by the next and valid at `now`; every issuer that carries
  BasicConstraints must be a CA.
* Only `VerificationError` / `ProtocolError` escape.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

MAX_CHAIN = 8


class RevocationStatus(enum.Enum):
    """What a revocation source says about one certificate."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class RevocationSource(Protocol):
    """Answers revocation status per certificate (NVIDIA's OCSP service, or a test double)."""

    def status(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, now: datetime
    ) -> RevocationStatus:
        """Return the status of `cert` (issued by `issuer`) at `now`."""
        ...


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def require_canonical_signature(cert: x509.Certificate) -> None:
    """The signature BIT STRING must have zero unused bits (DER, RFC 5280 §4.1.1.3).

    pyca accepts an unused-bits octet of 1..7 when the padding bits happen to be zero and then
    reports the same signature bytes: the certificate's encoding would be malleable (a changed
    byte that still verifies). The signature is the last element of the certificate.

    Raises:
        ProtocolError: The signature is not encoded with zero unused bits.
    """
    signature = cert.signature
    tail = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    if not cert.public_bytes(Encoding.DER).endswith(tail):
        raise ProtocolError("certificate: signature BIT STRING is not DER (unused bits)")


def materialize(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Touch every lazily parsed field once, so malformed certificates fail here, typed.

    cryptography parses names, validity and extensions on first access; without this a
    malformed field would raise a bare ValueError deep inside verification. The signature's
    encoding is checked too (`require_canonical_signature`).

    Raises:
        ProtocolError: A field of some certificate does not parse.
    """
    for cert in certs:
        require_canonical_signature(cert)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # we reject it here
            serial = cert.serial_number
        if serial <= 0:
            raise ProtocolError("certificate chain: serial number is not positive (RFC 5280)")
        try:
            _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
            _ = (cert.extensions, cert.signature_hash_algorithm, cert.public_key())
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion,
                x509.DuplicateExtension) as exc:  # not a ValueError: named on its own
            raise ProtocolError("certificate chain: a certificate field does not parse") from exc
    return list(certs)


def parse_der_chain(certs: Sequence[bytes]) -> list[x509.Certificate]:
    """Parse DER certificates (leaf first).

    Raises:
        ProtocolError: Empty, too long, or a certificate does not parse.
    """
    if not certs or len(certs) > MAX_CHAIN:
        raise ProtocolError("certificate chain is empty or too long")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # checked below
            chain = [x509.load_der_x509_certificate(bytes(c)) for c in certs]
    except (ValueError, x509.InvalidVersion) as exc:
        raise ProtocolError("certificate chain: a certificate does not parse") from exc
    return materialize(chain)


def parse_pem_chain(pem: bytes) -> list[x509.Certificate]:
    """Parse concatenated PEM certificates (leaf first).

    Raises:
        ProtocolError: No certificate, too many, or a certificate does not parse.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # checked below
            chain = x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion) as exc:
        raise ProtocolError("certificate chain: PEM does not parse") from exc
    if not chain or len(chain) > MAX_CHAIN:
        raise ProtocolError("certificate chain is empty or too long")
    return materialize(chain)


def verify_chain(
    chain: Sequence[x509.Certificate], root: x509.Certificate, *, now: datetime
) -> None:
    """Verify leaf → ... → root, ending in exactly the pinned root, all valid at `now`.

    Args:
        chain: Certificates, leaf first, root last.
        root: The pinned root.
        now: Verification time (timezone-aware).

    Raises:
        VerificationError: Wrong root, broken link, non-CA issuer or a certificate not valid
            at `now` (the message names which).
    """
    if not chain:
        raise VerificationError("certificate chain is empty")
    pinned = root.public_bytes(Encoding.DER)
    if chain[-1].public_bytes(Encoding.DER) != pinned:
        raise VerificationError("chain does not end in the pinned root")
    for depth, cert in enumerate(chain):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise VerificationError(f"certificate at depth {depth} is not valid at this time")
    for depth, (child, issuer) in enumerate(pairwise(chain)):
        _require_ca(issuer, depth + 1)
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise VerificationError(
                f"certificate at depth {depth} is not issued by the next one"
            ) from exc
        except InvalidSignature as exc:
            raise VerificationError(
                f"certificate at depth {depth}: issuer signature does not verify"
            ) from exc
    root_cert = chain[-1]
    try:
        root_cert.verify_directly_issued_by(root_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise VerificationError("pinned root is not self-signed") from exc


def _require_ca(cert: x509.Certificate, depth: int) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    except ValueError as exc:
        raise VerificationError(f"certificate at depth {depth} has malformed extensions") from exc
    if not bc.ca:
        raise VerificationError(f"certificate at depth {depth} issues others but is not a CA")


def public_key(cert: x509.Certificate) -> object:
    """The certificate's public key, or `VerificationError` when it cannot be loaded."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError("certificate public key cannot be loaded") from exc


@dataclass(frozen=True, slots=True)
class RevocationCheck:
    """The outcome of a revocation check that did not fail: `checked` False means NOT checked."""

    reason: str
    checked: bool


def check_revocation(
    chain: Sequence[x509.Certificate], source: RevocationSource | None, *, now: datetime,
    required: bool,
) -> RevocationCheck:
    """Ask the revocation source about every non-root certificate.

    Args:
        chain: The verified chain, leaf first.
        source: The revocation source (an OCSP responder or cache), or None.
        now: Verification time.
        required: The policy requires revocation: no source, or a status the source cannot
            vouch for (unknown, stale, unreachable), fails. Otherwise it is NOT checked.

    Returns:
        The outcome; `checked` is False when revocation could not be established and the
        policy allows that (the caller records a warning, never a pass).

    Raises:
        VerificationError: A certificate is revoked, or (when required) its status is not known.
    """
    if source is None:
        if required:
            raise VerificationError("no revocation source, and the policy requires revocation")
        return RevocationCheck("NOT checked: no revocation source (policy: best-effort)",
                               checked=False)
    unknown: list[int] = []
    for depth, (cert, issuer) in enumerate(pairwise(chain)):
        try:
            status = source.status(cert, issuer, now=now)
        except Exception:  # noqa: BLE001 - an injected source failing is "unknown" (fail closed)
            status = RevocationStatus.UNKNOWN
        if status is RevocationStatus.REVOKED:
            raise VerificationError(f"certificate at depth {depth} is revoked")
        if status is not RevocationStatus.GOOD:
            unknown.append(depth)
    if unknown and required:
        raise VerificationError(f"certificate at depth {unknown[0]}: revocation status unknown "
                                "(missing or stale answer) and the policy requires revocation")
    if unknown:
        return RevocationCheck(f"NOT checked: status unknown at depth(s) {unknown} "
                               "(policy: best-effort)", checked=False)
    return RevocationCheck(f"{len(chain) - 1} certificates good per the revocation source",
                           checked=True)
