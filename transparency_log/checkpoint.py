r"""C2SP tlog-checkpoint bodies and their signed-note envelope (pure).

A checkpoint body is `origin\n<size>\n<base64 root>\n` followed by optional non-empty
extension lines (c2sp.org/tlog-checkpoint). The size is decimal ASCII without leading zeros and
below 2**63; the root is exactly 32 bytes of standard padded base64.

Timestamp (SECURITY.md L4): C2SP checkpoints carry no time, so this log adds one extension line
`hushcc-timestamp <unix seconds>` (decimal, no leading zeros) written and signed by the log.
Because it is part of the signed body, the log's own note signature covers it; standard
tlog tooling ignores extension lines it does not know. Witness cosignature timestamps
(`cosignature.py`) are a second, independent source of freshness.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hushcc.errors import ProtocolError, VerificationError
from transparency_log.merkle import HASH_SIZE
from transparency_log.note import b64decode_strict, open_note, sign_note

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transparency_log.note import NoteVerifier, OpenedNote, Signer

MAX_SIZE = (1 << 63) - 1
TIMESTAMP_EXTENSION = "hushcc-timestamp "


def _parse_decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise ProtocolError(f"checkpoint {what} is not a canonical decimal")
    value = int(text)
    if value > MAX_SIZE:
        raise ProtocolError(f"checkpoint {what} overflows")
    return value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint body."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        """Validate fields so a Checkpoint always serializes to a parseable body."""
        if not self.origin or "\n" in self.origin:
            raise ProtocolError("checkpoint origin is empty or multi-line")
        if not 0 <= self.size <= MAX_SIZE:
            raise ProtocolError("checkpoint size out of range")
        if len(self.root) != HASH_SIZE:
            raise ProtocolError("checkpoint root hash must be 32 bytes")
        if any(not e or "\n" in e for e in self.extensions):
            raise ProtocolError("checkpoint extension lines must be non-empty single lines")

    @classmethod
    def from_bytes(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text).

        Raises:
            ProtocolError: malformed origin, size or root.
        """
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("checkpoint is not UTF-8") from exc
        if not text.endswith("\n"):
            raise ProtocolError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise ProtocolError("checkpoint has fewer than three lines")
        size = _parse_decimal(lines[1], "size")
        root = b64decode_strict(lines[2])
        if len(root) != HASH_SIZE or base64.b64encode(root).decode() != lines[2]:
            raise ProtocolError("checkpoint root hash is not 32 bytes of canonical base64")
        return cls(lines[0], size, root, tuple(lines[3:]))

    def to_bytes(self) -> bytes:
        """Serialize the body (exact inverse of `from_bytes`)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return ("\n".join([*lines, *self.extensions]) + "\n").encode()

    @property
    def timestamp(self) -> int | None:
        """The `hushcc-timestamp` extension value in Unix seconds, or None when absent.

        Raises:
            ProtocolError: the extension is present but malformed or repeated.
        """
        values = [e[len(TIMESTAMP_EXTENSION) :] for e in self.extensions
                  if e.startswith(TIMESTAMP_EXTENSION)]
        if not values:
            return None
        if len(values) > 1:
            raise ProtocolError("checkpoint timestamp extension repeated")
        return _parse_decimal(values[0], "timestamp")

    def with_timestamp(self, now: int) -> Checkpoint:
        """Return this checkpoint with its timestamp extension set to `now`."""
        others = tuple(e for e in self.extensions if not e.startswith(TIMESTAMP_EXTENSION))
        return Checkpoint(self.origin, self.size, self.root, (f"{TIMESTAMP_EXTENSION}{now}",
                                                              *others))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose note signature by the pinned log key verified."""

    checkpoint: Checkpoint
    note: bytes
    opened: OpenedNote


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """Return the signed note of `checkpoint` signed by the log key."""
    if checkpoint.origin != signer.name:
        raise ProtocolError("the log key name must equal the checkpoint origin")
    return sign_note(checkpoint.to_bytes(), [signer])


def open_checkpoint(
    note: bytes, log_verifier: NoteVerifier, origin: str,
    extra_verifiers: Sequence[NoteVerifier] = (),
) -> SignedCheckpoint:
    """Verify the log's signature on a checkpoint note and parse its body (L8).

    Args:
        note: the signed note bytes.
        log_verifier: the pinned log verifier key.
        origin: the pinned origin line.
        extra_verifiers: other known keys (e.g. witnesses) whose invalid signatures are errors.

    Returns:
        The verified checkpoint.

    Raises:
        ProtocolError: malformed note or body.
        VerificationError: the log's signature is missing or invalid, or the origin differs.
    """
    opened = open_note(note, [log_verifier, *extra_verifiers])
    if not any(s.name == log_verifier.name and s.hash == log_verifier.hash
               for s in opened.verified):
        raise VerificationError("checkpoint is not signed by the log key")
    checkpoint = Checkpoint.from_bytes(opened.text)
    if checkpoint.origin != origin:
        raise VerificationError("checkpoint origin is not the pinned origin")
    return SignedCheckpoint(checkpoint, note, opened)
