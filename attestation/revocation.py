"""Revocation sources for the bundle verifier: AMD's KDS CRLs and NVIDIA OCSP answers, cached.

AMD publishes one CRL per product at `https://kdsintf.amd.com/vcek/v1/{product}/crl` (DER,
signed by that product's ARK with RSASSA-PSS / SHA-384); it lists revoked ASKs, the only
certificates the ARK issues (a VCEK is issued by the ASK and is not covered). NVIDIA answers
OCSP for GPU device and RIM chains (`attestation.gpu.ocsp`). Both are read from a cache a node
or client refreshes out of band, so verification stays offline and pure:

    <cache>/amd/<Product>.crl        e.g. amd/Milan.crl, amd/Genoa.crl, amd/Turin.crl
    <cache>/nvidia-ocsp/*.der        OCSP responses, any names

`check_amd_crl` accepts a CRL only when it is a CRL, its issuer is the ARK's subject, its
signature verifies under the ARK's key, and it is current (this_update <= now + skew <=
next_update + skew). A missing or stale CRL fails under `revocation = "required"`; under
"best-effort" it is NOT checked (a warning). A revoked ASK always fails.

Invariants: pure apart from `load_revocation_cache` (reads one directory); only
`VerificationError` / `ConfigError` escape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation.amd import PRODUCTS
from attestation.gpu.ocsp import CachedOcspSource
from attestation.x509chain import RevocationCheck
from hushcc.errors import ConfigError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from pathlib import Path

    from attestation.x509chain import RevocationSource

CLOCK_SKEW = timedelta(minutes=5)
MAX_CACHE_FILES = 256


@dataclass(frozen=True, slots=True)
class RevocationSources:
    """What the bundle verifier may consult: AMD CRLs per product, a GPU revocation source."""

    amd_crls: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    gpu: RevocationSource | None = None


def check_amd_crl(crl_der: bytes | None, *, ark: x509.Certificate, ask: x509.Certificate,
                  now: datetime, required: bool) -> RevocationCheck:
    """Check the ASK against the ARK's CRL (module docstring).

    Raises:
        VerificationError: The ASK is revoked; or, when required, the CRL is missing, stale,
            malformed, or not signed by the ARK.
    """
    try:
        reason = _crl_problem(crl_der, ark, now)
    except ValueError as exc:
        reason = f"the CRL does not parse ({exc.__class__.__name__})"
    if reason is None:
        crl = x509.load_der_x509_crl(crl_der or b"")
        if crl.get_revoked_certificate_by_serial_number(ask.serial_number) is not None:
            raise VerificationError("the ASK is revoked by AMD's CRL")
        return RevocationCheck(f"ASK not revoked per the ARK-signed CRL of "
                               f"{crl.last_update_utc.date()}", checked=True)
    if required:
        raise VerificationError(f"{reason}, and the policy requires revocation")
    return RevocationCheck(f"NOT checked: {reason} (policy: best-effort)", checked=False)


def _crl_problem(crl_der: bytes | None, ark: x509.Certificate, now: datetime) -> str | None:
    if crl_der is None:
        return "no AMD CRL for this product in the cache"
    crl = x509.load_der_x509_crl(crl_der)
    key = ark.public_key()
    if (crl.issuer != ark.subject
            or not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            or not crl.is_signature_valid(key)):
        return "the CRL is not issued and signed by the ARK"
    next_update = crl.next_update_utc
    if crl.last_update_utc > now + CLOCK_SKEW:
        return "the CRL is issued in the future"
    if next_update is None or now > next_update + CLOCK_SKEW:
        return "the CRL is stale (past its nextUpdate)"
    return None


def load_revocation_cache(directory: Path) -> RevocationSources:
    """Read `amd/<Product>.crl` and `nvidia-ocsp/*.der` from a cache directory.

    Raises:
        ConfigError: The directory or a file in it cannot be read, or holds too many files.
    """
    try:
        crls = {p: (directory / "amd" / f"{p}.crl").read_bytes() for p in PRODUCTS
                if (directory / "amd" / f"{p}.crl").is_file()}
        ocsp_dir = directory / "nvidia-ocsp"
        files = sorted(ocsp_dir.glob("*.der")) if ocsp_dir.is_dir() else []
        if len(files) > MAX_CACHE_FILES:
            raise ConfigError(f"revocation cache holds more than {MAX_CACHE_FILES} OCSP answers")
        answers = tuple(f.read_bytes() for f in files)
    except OSError as exc:
        raise ConfigError(f"cannot read the revocation cache {directory}") from exc
    return RevocationSources(MappingProxyType(crls), CachedOcspSource(answers) if answers else None)
