r"""C2SP tlog-cosignature/v1 (Ed25519) witness cosignatures and a k-of-n witness policy (pure).

A cosignature is a note signature line whose key hash is
`SHA-256(name || 0x0A || 0x04 || public key)[:4]` and whose signature bytes are a
`timestamped_signature`: u64 big-endian POSIX timestamp || 64-byte Ed25519 signature over
`"cosignature/v1\n" || "time " || decimal(timestamp) || "\n" || checkpoint note body`.

Invariants: a witness counts toward a policy only when its signature verifies over the exact
checkpoint body; timestamps above 2**63 - 1 are rejected; time is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hushcc.errors import ProtocolError, VerificationError
from transparency_log.note import (
    ALG_COSIGNATURE_V1,
    Note,
    NoteSignature,
    format_vkey,
    is_valid_name,
    key_hash,
    parse_vkey,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

HEADER = b"cosignature/v1\n"
MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """Return the tlog-cosignature/v1 Ed25519 signed message for a checkpoint body."""
    return HEADER + b"time " + str(timestamp).encode() + b"\n" + body


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    """A witness's cosignature/v1 Ed25519 verifier (a signed-note `NoteVerifier`)."""

    name: str
    hash: bytes
    public_key: bytes

    @classmethod
    def from_string(cls, vkey: str) -> CosignatureVerifier:
        """Parse a vkey `name+hash+base64(0x04 || key)`.

        Raises:
            ProtocolError: malformed key or not a cosignature/v1 key.
        """
        name, alg, hash_, pub = parse_vkey(vkey)
        if alg != ALG_COSIGNATURE_V1:
            raise ProtocolError("verifier key is not a cosignature/v1 key")
        return cls(name, hash_, pub)

    def to_string(self) -> str:
        """Return the vkey string."""
        return format_vkey(self.name, self.hash, ALG_COSIGNATURE_V1, self.public_key)

    def timestamp_of(self, text: bytes, sig: bytes) -> int | None:
        """Return the cosignature timestamp if `sig` verifies over `text`, else None."""
        if len(sig) != 8 + 64:
            return None
        timestamp = int.from_bytes(sig[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return None
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                sig[8:], cosigned_message(text, timestamp)
            )
        except InvalidSignature:
            return None
        return timestamp

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Return whether `sig` is a valid cosignature over `text`."""
        return self.timestamp_of(text, sig) is not None


class Cosigner:
    """A witness key that cosigns checkpoints (used by tests and local witnesses)."""

    __slots__ = ("_key", "name")

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        """Create a cosigner named `name`."""
        if not is_valid_name(name):
            raise ProtocolError("invalid key name")
        self.name = name
        self._key = key

    def __repr__(self) -> str:
        """Name the cosigner, never its key."""
        return f"Cosigner(name={self.name!r})"

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        """Create a new random cosigner."""
        return cls(name, Ed25519PrivateKey.generate())

    def verifier(self) -> CosignatureVerifier:
        """The matching verifier."""
        pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return CosignatureVerifier(self.name, key_hash(self.name, ALG_COSIGNATURE_V1, pub), pub)

    def cosign(self, note: bytes, timestamp: int) -> bytes:
        """Return `note` with this witness's cosignature line appended.

        Raises:
            ProtocolError: the note is malformed or the timestamp out of range.
        """
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise ProtocolError("cosignature timestamp out of range")
        parsed = Note.from_bytes(note)
        sig = self._key.sign(cosigned_message(parsed.text, timestamp))
        line = NoteSignature(self.name, self.verifier().hash, timestamp.to_bytes(8, "big") + sig)
        return Note(parsed.text, (*parsed.signatures, line)).to_bytes()


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """Require valid cosignatures from at least `threshold` of `witnesses`."""

    witnesses: tuple[CosignatureVerifier, ...]
    threshold: int

    def __post_init__(self) -> None:
        """Reject a policy that could never, or would always, be met."""
        if not 1 <= self.threshold <= len(self.witnesses):
            raise ProtocolError("witness threshold must be between 1 and the witness count")
        if len({(w.name, w.hash) for w in self.witnesses}) != len(self.witnesses):
            raise ProtocolError("duplicate witness in policy")

    def verify(self, note: bytes, *, now: int | None = None, max_skew: int = 300) -> list[int]:
        """Check the policy on a signed checkpoint note.

        Args:
            note: the signed note (log signature plus cosignature lines).
            now: current Unix time; when given, cosignatures dated after `now + max_skew`
                do not count.
            max_skew: tolerated clock skew in seconds.

        Returns:
            The timestamps of the counted cosignatures.

        Raises:
            ProtocolError: the note is malformed.
            VerificationError: fewer than `threshold` distinct witnesses cosigned.
        """
        parsed = Note.from_bytes(note)
        stamps: dict[tuple[str, bytes], int] = {}
        by_key = {(w.name, w.hash): w for w in self.witnesses}
        for sig in parsed.signatures:
            witness = by_key.get((sig.name, sig.hash))
            if witness is None:
                continue
            stamp = witness.timestamp_of(parsed.text, sig.sig)
            if stamp is None or (now is not None and stamp > now + max_skew):
                continue
            stamps[(sig.name, sig.hash)] = stamp
        if len(stamps) < self.threshold:
            raise VerificationError(
                f"witness policy not met: {len(stamps)} of {self.threshold} required cosignatures"
            )
        return sorted(stamps.values())


def witness_policy(vkeys: Sequence[str], threshold: int) -> WitnessPolicy:
    """Build a policy from witness vkey strings."""
    return WitnessPolicy(tuple(CosignatureVerifier.from_string(v) for v in vkeys), threshold)
