"""Client-side log verification: stapled inclusion, freshness, witnesses and fork detection.

Pure functions plus one small I/O seam (`CheckpointStore`) for the persisted last-seen checkpoint.
Used by the SDK and by attestation ("the node's measurement is in the log").

Invariants (SECURITY.md L1-L5, L8):
* A checkpoint counts only when the pinned log key signed it for the pinned origin, the optional
  witness policy holds, and (with `max_age`) it is fresh: its age is taken from the log-signed
  `hushcc-timestamp` extension or the newest counted witness cosignature, whichever is newer;
  a checkpoint with neither is rejected when a maximum age is set.
* A newer checkpoint replaces the persisted one only if it is at least as large and provably
  consistent; an equal-size different root or a failing consistency proof raises
  `ForkDetectedError` carrying both signed notes as evidence; a smaller tree raises `RollbackError`.
* Time is a parameter (`now`, Unix seconds).
"""

from __future__ import annotations

import abc
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError, ProtocolError, VerificationError
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, open_checkpoint
from transparency_log.entry import ReleaseEntry
from transparency_log.note import Verifier

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transparency_log.cosignature import WitnessPolicy

MAX_FUTURE_SKEW = 300


class ForkDetectedError(VerificationError):
    """The log showed two views that cannot both be honest; both notes are the evidence."""

    def __init__(self, reason: str, old_note: bytes, new_note: bytes) -> None:
        """Record the reason and both signed checkpoints."""
        super().__init__(f"log fork detected: {reason}")
        self.old_note = old_note
        self.new_note = new_note


class RollbackError(VerificationError):
    """The log offered a smaller tree than one already seen."""


@dataclass(frozen=True, slots=True)
class LogTrust:
    """The pinned trust for one log."""

    verifier: Verifier
    origin: str
    witness_policy: WitnessPolicy | None = None
    max_age: int | None = None

    @classmethod
    def from_key(cls, vkey: str, origin: str | None = None, **kw: object) -> LogTrust:
        """Build from a verifier key string; the origin defaults to the key name."""
        verifier = Verifier.from_string(vkey)
        return cls(verifier, origin or verifier.name, **kw)  # type: ignore[arg-type]


def verify_checkpoint(note: bytes, trust: LogTrust, *, now: int | None = None) -> Checkpoint:
    """Verify a signed checkpoint note against the pinned trust (L4, L8).

    Args:
        note: signed checkpoint note.
        trust: pinned key, origin, optional witness policy and maximum age.
        now: current Unix time; required when `trust.max_age` is set.

    Returns:
        The verified checkpoint body.

    Raises:
        ProtocolError: malformed note.
        VerificationError: bad signature, origin, witness policy, or stale checkpoint.
    """
    signed = open_checkpoint(note, trust.verifier, trust.origin)
    stamps: list[int] = []
    if trust.witness_policy is not None:
        stamps = trust.witness_policy.verify(note, now=now, max_skew=MAX_FUTURE_SKEW)
    if trust.max_age is not None:
        if now is None:
            raise VerificationError("a maximum checkpoint age needs the current time")
        own = signed.checkpoint.timestamp
        candidates = [t for t in [own, *stamps] if t is not None]
        if not candidates:
            raise VerificationError("checkpoint carries no timestamp to check its age")
        newest = max(candidates)
        if newest > now + MAX_FUTURE_SKEW:
            raise VerificationError("checkpoint timestamp is in the future")
        if now - newest > trust.max_age:
            raise VerificationError("checkpoint is older than the maximum age")
    return signed.checkpoint


def verify_stapled_inclusion(  # noqa: PLR0913 - keyword-only pinned trust parameters
    entry_bytes: bytes, index: int, checkpoint_text: bytes | str, proof: Sequence[bytes], *,
    log_verifier_key: str | Verifier, origin: str | None = None,
    witness_policy: WitnessPolicy | None = None, max_age: int | None = None,
    now: int | None = None,
) -> Checkpoint:
    """Verify offline that `entry_bytes` is leaf `index` of a checkpoint the log signed (L1, L5).

    Args:
        entry_bytes: the exact leaf input (canonical release entry bytes).
        index: 0-based leaf index.
        checkpoint_text: the signed checkpoint note.
        proof: RFC 9162 inclusion path, 32-byte hashes.
        log_verifier_key: pinned log verifier key (string or parsed).
        origin: pinned origin (default: the key name).
        witness_policy: optional k-of-n witnesses.
        max_age: optional maximum checkpoint age in seconds (needs `now`).
        now: current Unix time.

    Returns:
        The verified checkpoint.

    Raises:
        VerificationError: any check fails (a malformed checkpoint is wrapped).
        ConfigError: the pinned key is malformed.
    """
    try:
        verifier = (log_verifier_key if isinstance(log_verifier_key, Verifier)
                    else Verifier.from_string(log_verifier_key))
    except ProtocolError as exc:
        raise ConfigError("the pinned log verifier key is malformed") from exc
    trust = LogTrust(verifier, origin or verifier.name, witness_policy, max_age)
    note = checkpoint_text.encode() if isinstance(checkpoint_text, str) else checkpoint_text
    try:
        checkpoint = verify_checkpoint(note, trust, now=now)
    except ProtocolError as exc:
        raise VerificationError("stapled checkpoint is malformed") from exc
    merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(entry_bytes), proof,
                            checkpoint.root)
    return checkpoint


def verify_entry_measurement(entry_bytes: bytes, measurement: str) -> ReleaseEntry:
    """Parse a logged release entry and check it lists `measurement` (L5).

    Raises:
        VerificationError: the entry is malformed or does not list the measurement.
    """
    try:
        entry = ReleaseEntry.from_bytes(entry_bytes)
    except ProtocolError as exc:
        raise VerificationError("logged entry is not a valid release entry") from exc
    if not entry.has_measurement(measurement):
        raise VerificationError("measurement is not the one in the logged entry")
    return entry


def check_consistency(
    old_note: bytes, old: Checkpoint, new_note: bytes, new: Checkpoint, proof: Sequence[bytes]
) -> None:
    """Check that `new` extends `old` (L2, L3).

    Raises:
        RollbackError: the new tree is smaller.
        ForkDetectedError: same size different root, or the consistency proof fails.
    """
    if new.size < old.size:
        raise RollbackError("log offered a smaller tree than the one last seen")
    if new.size == old.size:
        if new.root != old.root:
            raise ForkDetectedError("same tree size with different roots", old_note, new_note)
        return
    if old.size == 0:
        return  # every tree extends the empty tree
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except VerificationError as exc:
        raise ForkDetectedError("new checkpoint is not consistent with the last seen one",
                           old_note, new_note) from exc


def cross_check(trust: LogTrust, note_a: bytes, note_b: bytes, proof: Sequence[bytes],
                *, now: int | None = None) -> None:
    """Compare two views of the log exchanged by clients or witnesses (gossip, L3).

    Args:
        trust: the pinned log trust.
        note_a: one signed checkpoint.
        note_b: another signed checkpoint.
        proof: consistency proof from the smaller to the larger tree (empty if equal sizes).
        now: current Unix time (for a maximum age).

    Raises:
        ForkDetectedError: the two views cannot both come from one append-only log.
        VerificationError: either checkpoint does not verify.
    """
    a = verify_checkpoint(note_a, trust, now=now)
    b = verify_checkpoint(note_b, trust, now=now)
    if a.size <= b.size:
        check_consistency(note_a, a, note_b, b, proof)
    else:
        check_consistency(note_b, b, note_a, a, proof)


class CheckpointStore(abc.ABC):
    """Where the last-seen checkpoint note of a log is persisted."""

    @abc.abstractmethod
    def load(self) -> bytes | None:
        """Return the persisted note, or None."""

    @abc.abstractmethod
    def save(self, note: bytes) -> None:
        """Persist `note` durably (replacing the previous one)."""


class MemoryCheckpointStore(CheckpointStore):
    """An in-memory store (tests, short-lived clients)."""

    def __init__(self, note: bytes | None = None) -> None:
        """Start with an optional note."""
        self.note = note

    def load(self) -> bytes | None:
        """Return the stored note."""
        return self.note

    def save(self, note: bytes) -> None:
        """Replace the stored note."""
        self.note = note


class FileCheckpointStore(CheckpointStore):
    """A file store: write to a temporary file, fsync, rename, fsync the directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Store the note at `path`."""
        self.path = Path(path)

    def load(self) -> bytes | None:
        """Return the note, or None when the file does not exist."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, note: bytes) -> None:
        """Atomically and durably replace the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(note)
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class LogClient:
    """Tracks one log's view: accepts newer checkpoints only when they extend the persisted one."""

    def __init__(self, trust: LogTrust, store: CheckpointStore) -> None:
        """Use `trust` to verify and `store` to persist."""
        self.trust = trust
        self.store = store

    def last_seen(self) -> Checkpoint | None:
        """Return the persisted checkpoint body (re-verified), or None."""
        note = self.store.load()
        return None if note is None else open_checkpoint(
            note, self.trust.verifier, self.trust.origin).checkpoint

    def update(self, note: bytes, consistency: Sequence[bytes], *, now: int | None = None
               ) -> Checkpoint:
        """Verify `note`, check it extends the persisted checkpoint, then persist it.

        Args:
            note: the newer signed checkpoint.
            consistency: consistency proof from the persisted size to the new size.
            now: current Unix time (for the maximum age).

        Returns:
            The accepted checkpoint.

        Raises:
            VerificationError: signature/age/witness failure, RollbackError or ForkDetectedError.
        """
        new = verify_checkpoint(note, self.trust, now=now)
        old_note = self.store.load()
        if old_note is not None:
            old = open_checkpoint(old_note, self.trust.verifier, self.trust.origin).checkpoint
            check_consistency(old_note, old, note, new, consistency)
            if new.size == old.size and (new.timestamp or 0) <= (old.timestamp or 0):
                return new  # same tree, not fresher: keep the persisted note
        self.store.save(note)
        return new
