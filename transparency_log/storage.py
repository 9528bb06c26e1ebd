"""Crash-safe append-only log storage on the local filesystem (an I/O shell).

One append-only file, `log`, holds records `type (1) || length (u32 BE) || payload || CRC-32
(u32 BE, over type, length and payload)`: type `E` an entry, type `C` a signed checkpoint note
covering every entry record before it. A second file, `checkpoint`, is a non-durable copy of the
latest published checkpoint (for static serving and to detect lost data), never the source of
truth.

Append protocol (one batch = one write, one fsync, one new checkpoint):
1. write the batch's entry records followed by its signed checkpoint record after the published
   end of `log`; fsync;
2. only then publish the checkpoint (readers and `POST /add` callers see it) and refresh the
   `checkpoint` copy (best effort, no fsync).
If the write or fsync fails, nothing is published and the file is truncated back to the published
end (and fsynced) before the next append.

The log file is locked (`flock`) so only one process appends.

`index_of` finds a published entry by its leaf hash (an in-memory map rebuilt on open), so the
server answers a repeated add with the entry's existing index instead of appending it again.
`append_batch` itself appends what it is given (deduplication is the caller's policy).

Recovery on open: parse records from the start and stop at the first torn or corrupt one (a
crash mid-write leaves at most the unpublished last batch torn); take the last complete
checkpoint record, require that it verifies under the log key, covers exactly the entry records
before it and matches their Merkle root (else refuse to start: `StorageError`); truncate
everything after it. If the `checkpoint` copy names a larger tree than that, published data was
lost and the log refuses to start. So a crash at any point (kill -9 between write and fsync, a
failing fsync, a full disk) leaves a log that serves only trees consistent with every checkpoint
it ever published.

All file operations go through `FileOps`, the seam tests use to inject write and fsync failures.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Self

from hushcc.errors import HushError
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from transparency_log.tiles import MAX_ENTRY_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from transparency_log.note import Signer

LOG = "log"
CHECKPOINT = "checkpoint"
ENTRY = b"E"
CHECKPOINT_RECORD = b"C"
HEADER = 5


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
        """`Path.replace`."""
        src.replace(dst)

    def close(self, fd: int) -> None:
        """`os.close`."""
        os.close(fd)


def record(kind: bytes, payload: bytes) -> bytes:
    """Encode one log record."""
    head = kind + len(payload).to_bytes(4, "big")
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "big")


def parse_records(data: bytes, pos: int = 0) -> list[tuple[bytes, int, int, int]]:
    """Return `(kind, record start, payload start, record end)` of each complete valid record.

    Parsing stops at the first torn or corrupt record.
    """
    out = []
    while pos + HEADER + 4 <= len(data):
        kind = data[pos : pos + 1]
        length = int.from_bytes(data[pos + 1 : pos + HEADER], "big")
        end = pos + HEADER + length + 4
        if kind not in (ENTRY, CHECKPOINT_RECORD) or end > len(data):
            break
        if zlib.crc32(data[pos : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            break
        out.append((kind, pos, pos + HEADER, end))
        pos = end
    return out


class LogStorage:
    """The durable log: a Merkle tree over the entry records plus the signed checkpoints."""

    def __init__(self, state_dir: str | os.PathLike[str], signer: Signer, *,
                 ops: FileOps | None = None, clock: Callable[[], float] = time.time) -> None:
        """Open (recovering if needed) or create the log in `state_dir`.

        Raises:
            StorageError: the files are inconsistent with the signed checkpoints.
        """
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.signer = signer
        self.ops = ops or FileOps()
        self.clock = clock
        self.tree = merkle.MerkleTree()
        self.positions = array("Q")  # file offset of each entry record
        self._index: dict[bytes, int] = {}  # leaf hash -> index, published entries only
        self._end = 0  # end of the published part of the file
        self._note = b""
        self._checkpoint = Checkpoint(signer.name, 0, merkle.EMPTY_ROOT)
        self._fd = self.ops.open(self.dir / LOG, os.O_RDWR | os.O_CREAT)
        self._broken = False
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one writer process
            except BlockingIOError as exc:
                raise StorageError("the log is already open in another process") from exc
            self._load()
        except BaseException:
            self.ops.close(self._fd)
            raise

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

    def index_of(self, entry: bytes) -> int | None:
        """Return the index of `entry` in the published tree, or None if it is not there."""
        return self._index.get(merkle.leaf_hash(entry))

    def entry(self, index: int) -> bytes:
        """Return the entry at `index` (< size)."""
        return self.entries(index, index + 1)[0]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Return entries `[start, end)` (end <= size) with one read."""
        if not 0 <= start <= end <= self.size:
            raise IndexError("entry range out of range")
        if start == end:
            return []
        first = self.positions[start]
        stop = self.positions[end] if end < self.size else self._end
        data = os.pread(self._fd, stop - first, first)
        return [data[p:e - 4] for kind, _, p, e in parse_records(data) if kind == ENTRY]

    # --- appending -------------------------------------------------------------------------

    def append_batch(self, entries: Sequence[bytes]) -> tuple[int, bytes]:
        """Durably append `entries` with one new signed checkpoint, then publish it.

        Returns:
            The index of the first entry and the new signed checkpoint note.

        Raises:
            StorageError: the append failed; nothing was published.
        """
        if any(len(e) > MAX_ENTRY_SIZE for e in entries):
            raise StorageError("entry too large")
        if self._broken:
            self.recover()
        first, start = self.size, self._end
        buf = bytearray()
        positions = array("Q")
        try:
            for e in entries:
                positions.append(start + len(buf))
                buf += record(ENTRY, e)
                self.tree.append(e)
            checkpoint = Checkpoint(self.signer.name, self.tree.size, self.tree.root()
                                    ).with_timestamp(int(self.clock()))
            note = sign_checkpoint(checkpoint, self.signer)
            buf += record(CHECKPOINT_RECORD, note)
            os.lseek(self._fd, start, os.SEEK_SET)
            self._write_all(bytes(buf))
            self.ops.fsync(self._fd)
        except Exception as exc:
            self._broken = True
            self.tree.truncate(first)
            raise StorageError("append failed; nothing was published") from exc
        self.positions.extend(positions)
        for i in range(first, self.tree.size):
            self._index.setdefault(self.tree.node(0, i), i)
        self._end = start + len(buf)
        self._checkpoint, self._note = checkpoint, note
        self._write_copy(note)
        return first, note

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.ops.write(self._fd, view.tobytes())
            if n <= 0:
                raise OSError("short write")
            view = view[n:]

    def resign(self) -> bytes:
        """Re-sign the current tree with a fresh timestamp (keeps clients' max-age satisfied)."""
        return self.append_batch([])[1]

    def recover(self) -> None:
        """After a failed append: cut the file back to the published end, durably.

        Raises:
            StorageError: the file could not be truncated (the log stays read-only).
        """
        try:
            if os.fstat(self._fd).st_size != self._end:
                self.ops.truncate(self._fd, self._end)
            self.ops.fsync(self._fd)
        except OSError as exc:
            raise StorageError("could not roll back a failed append") from exc
        self._broken = False

    def _write_copy(self, note: bytes) -> None:
        """Refresh the non-durable `checkpoint` copy (best effort)."""
        tmp = self.dir / (CHECKPOINT + ".tmp")
        try:
            fd = self.ops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                self.ops.write(fd, note)
            finally:
                self.ops.close(fd)
            self.ops.replace(tmp, self.dir / CHECKPOINT)
        except OSError:
            return

    # --- recovery --------------------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild the published state from the log file (see the module docstring)."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        tree, positions = merkle.MerkleTree(), array("Q")
        last: tuple[int, int, int, int] | None = None  # payload start/end, record end, count
        for kind, pos, payload, end in parse_records(data):
            if kind == ENTRY:
                positions.append(pos)
                tree.append(data[payload : end - 4])
            else:
                last = (payload, end - 4, end, tree.size)
        if last is None:
            self._check_copy(0)
            self._init_empty()
            return
        payload, payload_end, end, count = last
        note = data[payload:payload_end]
        try:
            checkpoint = open_checkpoint(note, self.signer.verifier(), self.signer.name).checkpoint
        except HushError as exc:
            raise StorageError("last checkpoint does not verify under the log key") from exc
        if checkpoint.size != count or tree.root(count) != checkpoint.root:
            raise StorageError("log entries do not match the last signed checkpoint")
        self._check_copy(count)
        tree.truncate(count)
        del positions[count:]
        if size != end:
            self.ops.truncate(self._fd, end)  # drop the torn, unpublished tail
            self.ops.fsync(self._fd)
        self.tree, self.positions, self._end = tree, positions, end
        self._index = {}
        for i in range(count):
            self._index.setdefault(tree.node(0, i), i)  # the first copy of an entry counts
        self._checkpoint, self._note = checkpoint, note
        self._write_copy(note)

    def _check_copy(self, recovered: int) -> None:
        """Refuse to start when the published-checkpoint copy names a larger tree."""
        try:
            copy = (self.dir / CHECKPOINT).read_bytes()
            size = open_checkpoint(copy, self.signer.verifier(), self.signer.name).checkpoint.size
        except (OSError, HushError):
            return  # missing or torn copy: it is only a hint
        if size > recovered:
            raise StorageError("the log file lost entries covered by a published checkpoint")

    def _init_empty(self) -> None:
        """No checkpoint record exists: nothing was ever published; start an empty log."""
        if os.fstat(self._fd).st_size:
            self.ops.truncate(self._fd, 0)
        self.tree, self.positions, self._end = merkle.MerkleTree(), array("Q"), 0
        self._index = {}
        self.append_batch([])

    def close(self) -> None:
        """Close the log file (releasing its lock)."""
        self.ops.close(self._fd)

    def __enter__(self) -> Self:
        """Use as a context manager that closes the log."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the log."""
        self.close()
