"""Crash-safe append-only log storage on the local filesystem (an I/O shell).

Layout of the state directory:
* `entries`: every entry as `u16 big-endian length || bytes` (the tlog-tiles bundle encoding);
  only the prefix covered by the durable checkpoint is part of the log.
* `checkpoint`: the latest signed checkpoint note, replaced atomically.

Append protocol (one batch = one fsync of the entries, one new checkpoint):
1. write the batch's records after the committed end of `entries`; fsync;
2. sign the new checkpoint; write it to `checkpoint.tmp`, fsync, rename over `checkpoint`,
   fsync the directory;
3. only then publish it (readers and `POST /add` callers see it).
Recovery on open (and after any failed append): read `checkpoint`, verify its signature with the
log key, rebuild the tree from the first `size` records, require the same root, and truncate
`entries` after them. So a crash at any point (kill -9 between write and fsync, a failing fsync,
a full disk) leaves a log that serves a tree consistent with every checkpoint it has published:
records past the checkpoint are discarded, and a checkpoint is durable before anyone sees it.

All file operations go through `FileOps`, the seam tests use to inject write and fsync failures.
"""

from __future__ import annotations

import os
import time
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import HushError
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from transparency_log.tiles import MAX_ENTRY_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from transparency_log.note import Signer

ENTRIES = "entries"
CHECKPOINT = "checkpoint"


class StorageError(HushError):
    """The log could not durably append, or its files are inconsistent."""


class FileOps:
    """The filesystem calls storage makes (override in tests to inject failures)."""

    def open(self, path: Path, flags: int) -> int:
        """`os.open` with mode 0600."""
        return os.open(path, flags, 0o600)

    def write(self, fd: int, data: bytes) -> int:
        """`os.write`."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        """`os.fsync`."""
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        """`os.ftruncate`."""
        os.ftruncate(fd, size)

    def replace(self, src: Path, dst: Path) -> None:
        """`os.replace`."""
        src.replace(dst)

    def close(self, fd: int) -> None:
        """`os.close`."""
        os.close(fd)


def _write_all(ops: FileOps, fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = ops.write(fd, view.tobytes())
        if n <= 0:
            raise OSError("short write")
        view = view[n:]


class LogStorage:
    """The durable log: a Merkle tree over the entries file plus the signed checkpoint."""

    def __init__(self, state_dir: str | os.PathLike[str], signer: Signer, *,
                 ops: FileOps | None = None, clock: Callable[[], float] = time.time) -> None:
        """Open (recovering if needed) or create the log in `state_dir`.

        Raises:
            StorageError: the files are inconsistent with the signed checkpoint.
        """
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.signer = signer
        self.ops = ops or FileOps()
        self.clock = clock
        self.tree = merkle.MerkleTree()
        self.offsets = array("Q", [0])  # offsets[i] = start of record i; offsets[-1] = end
        self._note = b""
        self._checkpoint = Checkpoint(signer.name, 0, merkle.EMPTY_ROOT)
        self._fd = self.ops.open(self.dir / ENTRIES, os.O_RDWR | os.O_CREAT)
        self._broken = False
        self.recover()

    # --- reading (published state only) ---------------------------------------------------

    @property
    def size(self) -> int:
        """Size of the published tree."""
        return self._checkpoint.size

    @property
    def checkpoint_note(self) -> bytes:
        """The published signed checkpoint."""
        return self._note

    @property
    def checkpoint(self) -> Checkpoint:
        """The published checkpoint body."""
        return self._checkpoint

    def entry(self, index: int) -> bytes:
        """Return the entry at `index` (< size)."""
        if not 0 <= index < self.size:
            raise IndexError("entry index out of range")
        start, end = self.offsets[index], self.offsets[index + 1]
        return os.pread(self._fd, end - start, start)[2:]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Return entries `[start, end)` (end <= size) with one read."""
        if not 0 <= start <= end <= self.size:
            raise IndexError("entry range out of range")
        if start == end:
            return []
        data = os.pread(self._fd, self.offsets[end] - self.offsets[start], self.offsets[start])
        base = self.offsets[start]
        return [data[self.offsets[i] - base + 2 : self.offsets[i + 1] - base]
                for i in range(start, end)]

    # --- appending -------------------------------------------------------------------------

    def append_batch(self, entries: Sequence[bytes]) -> tuple[int, bytes]:
        """Durably append `entries` and publish one new checkpoint.

        Returns:
            The index of the first entry and the new signed checkpoint note.

        Raises:
            StorageError: the append failed; nothing was published and the log is recovered
                from disk before the next append.
        """
        if any(len(e) > MAX_ENTRY_SIZE for e in entries):
            raise StorageError("entry too large")
        if self._broken:
            try:
                self.recover()
            except OSError as exc:
                raise StorageError("log recovery failed") from exc
        first, old_end = self.size, self.offsets[-1]
        records = b"".join(len(e).to_bytes(2, "big") + e for e in entries)
        try:
            os.lseek(self._fd, old_end, os.SEEK_SET)
            _write_all(self.ops, self._fd, records)
            self.ops.fsync(self._fd)
            for e in entries:
                self.tree.append(e)
            pos = old_end
            new_offsets = array("Q")
            for e in entries:
                pos += 2 + len(e)
                new_offsets.append(pos)
            checkpoint = Checkpoint(self.signer.name, self.tree.size, self.tree.root()
                                    ).with_timestamp(int(self.clock()))
            note = sign_checkpoint(checkpoint, self.signer)
            self._persist_checkpoint(note)
        except Exception as exc:
            self._broken = True
            self.tree.truncate(first)
            raise StorageError("append failed; the log was not changed") from exc
        self.offsets.extend(new_offsets)
        self._checkpoint, self._note = checkpoint, note
        return first, note

    def _persist_checkpoint(self, note: bytes) -> None:
        tmp = self.dir / (CHECKPOINT + ".tmp")
        fd = self.ops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            _write_all(self.ops, fd, note)
            self.ops.fsync(fd)
        finally:
            self.ops.close(fd)
        self.ops.replace(tmp, self.dir / CHECKPOINT)
        dir_fd = self.ops.open(self.dir, os.O_RDONLY)
        try:
            self.ops.fsync(dir_fd)
        finally:
            self.ops.close(dir_fd)

    # --- recovery --------------------------------------------------------------------------

    def recover(self) -> None:
        """Re-derive the published state from the durable checkpoint and the entries file."""
        path = self.dir / CHECKPOINT
        if not path.exists():
            self._init_empty()
            return
        note = path.read_bytes()
        try:
            checkpoint = open_checkpoint(note, self.signer.verifier(), self.signer.name).checkpoint
        except HushError as exc:
            raise StorageError("durable checkpoint does not verify under the log key") from exc
        if (checkpoint.size <= self.tree.size and len(self.offsets) > checkpoint.size
                and self.tree.root(checkpoint.size) == checkpoint.root):
            self.tree.truncate(checkpoint.size)
            del self.offsets[checkpoint.size + 1 :]
        else:
            self._reload(checkpoint.size)
        if self.tree.root() != checkpoint.root:
            raise StorageError("entries do not match the durable checkpoint")
        end = self.offsets[-1]
        if os.fstat(self._fd).st_size != end:
            self.ops.truncate(self._fd, end)  # drop records past the checkpoint
            self.ops.fsync(self._fd)
        self._checkpoint, self._note, self._broken = checkpoint, note, False

    def _reload(self, size: int) -> None:
        """Rebuild the tree and offsets from the first `size` records of the entries file."""
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        tree, offsets, pos = merkle.MerkleTree(), array("Q", [0]), 0
        for _ in range(size):
            if pos + 2 > len(data):
                raise StorageError("entries file is shorter than the durable checkpoint")
            end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
            if end > len(data):
                raise StorageError("entries file is shorter than the durable checkpoint")
            tree.append(data[pos + 2 : end])
            offsets.append(end)
            pos = end
        self.tree, self.offsets = tree, offsets

    def _init_empty(self) -> None:
        """No checkpoint was ever made durable: nothing was published; start empty."""
        self.tree, self.offsets = merkle.MerkleTree(), array("Q", [0])
        self.ops.truncate(self._fd, 0)
        self.ops.fsync(self._fd)
        checkpoint = Checkpoint(self.signer.name, 0, merkle.EMPTY_ROOT).with_timestamp(
            int(self.clock()))
        note = sign_checkpoint(checkpoint, self.signer)
        self._persist_checkpoint(note)
        self._checkpoint, self._note, self._broken = checkpoint, note, False

    def resign(self) -> bytes:
        """Re-sign the current tree with a fresh timestamp (keeps clients' max-age satisfied)."""
        return self.append_batch([])[1]

    def close(self) -> None:
        """Close the entries file."""
        self.ops.close(self._fd)
