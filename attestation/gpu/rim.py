"""NVIDIA Reference Integrity Manifests (SWID tags) and the measurement comparison.

A RIM is a SWID tag (ISO/IEC 19770-2) whose `Payload` lists `Resource type="Measurement"`
entries: `index` (RIM index i ↔ SPDM measurement block i+1), `active` ("True"/"False"),
`alternatives` (n) and `Hash0..Hash{n-1}` attributes (SHA-384, hex). The driver RIM and the
VBIOS RIM each own a disjoint set of active indices (nvtrust semantics: an index active in both
is a conflict and rejected). `Meta@colloquialVersion` names the driver / VBIOS version.

Invariants: pure; `verify_rim` reads the measurements from exactly the tree whose XML-DSig
verified, after the signing chain verified to the pinned NVIDIA RIM root at `now`; every active
reference is compared and any mismatch or missing block raises. Only typed errors escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from attestation.gpu.anchors import load_root
from attestation.gpu.xmldsig import parse_xml, verify_enveloped
from attestation.x509chain import check_revocation, verify_chain
from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from cryptography import x509

    from attestation.x509chain import RevocationSource

SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
MAX_ALTERNATIVES = 16


@dataclass(frozen=True, slots=True)
class Rim:
    """The reference values of one RIM: SPDM index → allowed digests (active entries only)."""

    colloquial_version: str
    references: Mapping[int, tuple[bytes, ...]]
    revocation: str = "not applicable"
    revocation_checked: bool = False

    @classmethod
    def from_tree(cls, root: Any) -> Rim:  # noqa: ANN401 - lxml element
        """Read version and active references from a parsed SWID tag.

        Raises:
            ProtocolError: Missing Meta/Payload or malformed Resource entries.
        """
        meta = root.find(f"{{{SWID}}}Meta")
        payload = root.find(f"{{{SWID}}}Payload")
        if meta is None or payload is None or not meta.get("colloquialVersion"):
            raise ProtocolError("rim: missing Meta/colloquialVersion or Payload")
        refs: dict[int, tuple[bytes, ...]] = {}
        for res in payload.findall(f"{{{SWID}}}Resource"):
            if res.get("type") != "Measurement":
                continue
            index, active, digests = _resource(res)
            if index + 1 in refs:
                raise ProtocolError("rim: duplicate measurement index")
            if active:
                refs[index + 1] = digests
        return cls(str(meta.get("colloquialVersion")), MappingProxyType(refs))

    @classmethod
    def from_bytes(cls, data: bytes) -> Rim:
        """Parse a RIM WITHOUT verifying its signature (for display only).

        Raises:
            ProtocolError: Malformed XML or RIM.
        """
        return cls.from_tree(parse_xml(data))


def _resource(res: Any) -> tuple[int, bool, tuple[bytes, ...]]:  # noqa: ANN401
    try:
        index = int(res.get("index", ""))
        count = int(res.get("alternatives", ""))
    except ValueError as exc:
        raise ProtocolError("rim: bad index or alternatives") from exc
    active_text = res.get("active")
    if active_text not in {"True", "False"} or not 0 <= index < 255:
        raise ProtocolError("rim: bad active flag or index")
    if not 1 <= count <= MAX_ALTERNATIVES:
        raise ProtocolError("rim: bad number of alternatives")
    by_local = {k.rsplit("}", 1)[-1]: v for k, v in res.attrib.items()}
    digests: list[bytes] = []
    for i in range(count):
        try:
            digest = bytes.fromhex(by_local[f"Hash{i}"])
        except (KeyError, ValueError) as exc:
            raise ProtocolError("rim: missing or bad hash alternative") from exc
        if len(digest) != 48:
            raise ProtocolError("rim: hash is not SHA-384")
        digests.append(digest)
    return index, active_text == "True", tuple(digests)


def verify_rim(
    data: bytes,
    *,
    now: datetime,
    root: x509.Certificate | None = None,
    revocation: RevocationSource | None = None,
    revocation_required: bool = False,
) -> Rim:
    """Verify a RIM's XML-DSig, its signing chain to the pinned RIM root, then parse it.

    Args:
        data: The SWID tag bytes.
        now: Verification time (RIM signer certificates expire; verify at a time they were valid).
        root: The pinned root; NVIDIA's CoRIM signing root unless a test passes another.
        revocation: Optional revocation source; without one the result says NOT checked.
        revocation_required: Fail when revocation cannot be established (no source, unknown).

    Returns:
        The verified RIM.

    Raises:
        ProtocolError: Malformed document.
        VerificationError: Signature, chain, validity or revocation failure.
    """
    signed = verify_enveloped(data)
    pinned = root if root is not None else load_root("rim_root.pem")
    verify_chain(signed.chain, pinned, now=now)
    checked = check_revocation(signed.chain, revocation, now=now, required=revocation_required)
    rim = Rim.from_tree(signed.root)
    return Rim(rim.colloquial_version, rim.references, checked.reason, checked.checked)


def merge_references(driver: Rim, vbios: Rim) -> Mapping[int, tuple[bytes, ...]]:
    """Combine driver and VBIOS references; an index active in both is a conflict.

    Raises:
        VerificationError: Both RIMs claim the same active index.
    """
    overlap = set(driver.references) & set(vbios.references)
    if overlap:
        raise VerificationError(f"driver and VBIOS RIMs both claim index {min(overlap)}")
    return MappingProxyType({**driver.references, **vbios.references})


def compare_measurements(
    measurements: Mapping[int, bytes], references: Mapping[int, tuple[bytes, ...]]
) -> int:
    """Compare every reference index against the report's measurement blocks.

    Args:
        measurements: SPDM index → measured value.
        references: SPDM index → allowed values.

    Returns:
        The number of indices compared.

    Raises:
        VerificationError: A reference index is missing from the report or matches no
            alternative (the message names the first such index).
    """
    if not references:
        raise VerificationError("no reference measurements to compare against")
    for index in sorted(references):
        value = measurements.get(index)
        if value is None:
            raise VerificationError(f"measurement index {index} missing from the report")
        if value not in references[index]:
            raise VerificationError(f"measurement index {index} matches no reference value")
    return len(references)
