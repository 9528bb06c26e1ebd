r"""Release entries `hushcc.release/v1`: schema, canonical JSON and release signatures (pure).

Entry (DESIGN.md "Transparency log"), exactly these top-level keys:
    {"schema": "hushcc.release/v1", "image": {...}, "measurements": {...},
     "model": {...}, "source": {...}}
* `image`, `model`, `source`: objects with ASCII keys and string or integer values;
  `image` must name at least its `digest`.
* `measurements`: a non-empty object mapping a measurement name (e.g. `sim`, `sev-snp`, `tdx`)
  to a lowercase hex digest.
Canonical bytes: keys sorted, no whitespace, UTF-8, integers in [-(2**53 - 1), 2**53 - 1] (the
RFC 8785 subset for these value types). `ReleaseEntry.from_bytes` accepts only canonical bytes,
so one entry has exactly one leaf in the log.

Release signatures: the release-signing key is an Ed25519 key in the C2SP note key formats
(`PRIVATE+KEY+name+hash+base64` private file, `name+hash+base64` verifier string), separate
from the log key. It signs `b"hushcc.release/v1 signature\n" || canonical entry`. A signed
entry (the body of `POST /add`) is the JSON object
`{"entry": base64(canonical), "key": "name+hash", "signature": base64(64 bytes)}`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hushcc.errors import ProtocolError, VerificationError
from transparency_log.note import b64decode_strict
from transparency_log.tiles import MAX_ENTRY_SIZE  # entry bundles use 2-byte lengths

if TYPE_CHECKING:
    from collections.abc import Callable

    from transparency_log.note import Signer, Verifier

SCHEMA = "hushcc.release/v1"
SECTIONS = ("image", "measurements", "model", "source")
SIGNATURE_CONTEXT = b"hushcc.release/v1 signature\n"
_MAX_INT = (1 << 53) - 1
_HEX = frozenset("0123456789abcdef")


def canonical_json(value: object) -> bytes:
    """Return the canonical encoding: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError("duplicate JSON key")
        out[key] = value
    return out


def _check_section(name: str, section: object) -> dict[str, str | int]:
    if not isinstance(section, dict):
        raise ProtocolError(f"entry {name} must be an object")
    for key, value in section.items():
        if not key or not key.isascii():
            raise ProtocolError(f"entry {name} keys must be non-empty ASCII")
        ok_int = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_INT
        if not (isinstance(value, str) or ok_int):
            raise ProtocolError(f"entry {name} values must be strings or safe integers")
    return section


@dataclass(frozen=True, slots=True)
class ReleaseEntry:
    """A validated release entry and its canonical bytes (the log leaf)."""

    canonical: bytes
    image: dict[str, str | int]
    measurements: dict[str, str]
    model: dict[str, str | int]
    source: dict[str, str | int]

    @classmethod
    def from_value(cls, value: object) -> ReleaseEntry:
        """Validate a decoded JSON value against the schema.

        Raises:
            ProtocolError: the value does not follow `hushcc.release/v1`.
        """
        if not isinstance(value, dict):
            raise ProtocolError("entry must be a JSON object")
        if set(value) != {"schema", *SECTIONS}:
            raise ProtocolError("entry must have exactly the keys schema, " + ", ".join(SECTIONS))
        if value["schema"] != SCHEMA:
            raise ProtocolError("entry schema is not hushcc.release/v1")
        image, measurements, model, source = (_check_section(s, value[s]) for s in SECTIONS)
        if not isinstance(image.get("digest"), str) or not image["digest"]:
            raise ProtocolError("entry image must name its digest")
        if not measurements:
            raise ProtocolError("entry must list at least one measurement")
        for digest in measurements.values():
            if not isinstance(digest, str) or not digest or not set(digest) <= _HEX:
                raise ProtocolError("entry measurements must be lowercase hex strings")
        canonical = canonical_json(value)
        if len(canonical) > MAX_ENTRY_SIZE:
            raise ProtocolError("entry is too large")
        return cls(canonical, image, {k: str(v) for k, v in measurements.items()}, model, source)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReleaseEntry:
        """Parse canonical entry bytes; non-canonical encodings are rejected.

        Raises:
            ProtocolError: not JSON, not canonical, or not the schema.
        """
        if len(data) > MAX_ENTRY_SIZE:
            raise ProtocolError("entry is too large")
        try:
            value = _loads(data, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ProtocolError("entry is not valid JSON") from exc
        entry = cls.from_value(value)
        if entry.canonical != data:
            raise ProtocolError("entry is not in canonical form")
        return entry

    def to_bytes(self) -> bytes:
        """Return the canonical bytes (the log leaf input)."""
        return self.canonical

    def has_measurement(self, measurement: str) -> bool:
        """Return whether `measurement` (lowercase hex) is one of this release's measurements."""
        return measurement.lower() in self.measurements.values()


def _loads(data: bytes, parse_constant: Callable[[str], object] | None = None) -> object:
    """`json.loads` of untrusted UTF-8 with every failure a `ValueError`.

    Besides malformed JSON and bad UTF-8 (both `ValueError`s already), `json` raises
    `RecursionError` for nesting deeper than the interpreter's recursion limit (its C scanner
    checks depth and unwinds cleanly) and `ValueError` from `int` for more than 4,300 digits.
    """
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_constant=parse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _reject_constant(name: str) -> object:
    raise ProtocolError(f"entry contains the non-JSON constant {name}")


def release_message(canonical: bytes) -> bytes:
    """Return the bytes the release key signs for an entry."""
    return SIGNATURE_CONTEXT + canonical


def sign_entry(entry: ReleaseEntry, signer: Signer) -> bytes:
    """Return the signed-entry JSON (the `POST /add` body)."""
    return canonical_json({
        "entry": base64.b64encode(entry.canonical).decode(),
        "key": f"{signer.name}+{signer.hash.hex()}",
        "signature": base64.b64encode(signer.sign(release_message(entry.canonical))).decode(),
    })


def verify_signed_entry(body: bytes, release_key: Verifier) -> ReleaseEntry:
    """Parse a signed entry and verify it under the release key.

    Raises:
        ProtocolError: malformed envelope or entry.
        VerificationError: wrong key or invalid signature.
    """
    try:
        value = _loads(body)
    except ValueError as exc:
        raise ProtocolError("signed entry is not valid JSON") from exc
    if not isinstance(value, dict) or set(value) != {"entry", "key", "signature"}:
        raise ProtocolError("signed entry must have exactly entry, key and signature")
    if not all(isinstance(value[k], str) for k in value):
        raise ProtocolError("signed entry fields must be strings")
    entry = ReleaseEntry.from_bytes(b64decode_strict(value["entry"]))
    if value["key"] != f"{release_key.name}+{release_key.hash.hex()}":
        raise VerificationError("entry is not signed by the release key")
    signature = b64decode_strict(value["signature"])
    if not release_key.verify(release_message(entry.canonical), signature):
        raise VerificationError("release signature does not verify")
    return entry
