"""Crash-safe storage (L7): SIGKILLed subprocesses, injected write/fsync failures, full disk."""

from __future__ import annotations

import base64
import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hushcc.errors import VerificationError
from tests.transparency_log.crash_child import entry_for
from transparency_log import merkle
from transparency_log.checkpoint import open_checkpoint
from transparency_log.note import Signer
from transparency_log.storage import CHECKPOINT, LOG, FileOps, LogStorage, StorageError

CHILD = Path(__file__).with_name("crash_child.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate("crash.test.log")


def _assert_serves_consistent(storage: LogStorage, signer: Signer, notes: list[bytes]) -> None:
    """The recovered log extends every checkpoint it ever published, with nothing lost."""
    for note in notes:
        cp = open_checkpoint(note, signer.verifier(), signer.name).checkpoint
        assert storage.size >= cp.size, "a published checkpoint was lost"
        assert storage.tree.root(cp.size) == cp.root, "the log forked from a published checkpoint"
        if 0 < cp.size < storage.size:
            proof = merkle.consistency_proof(storage.tree, cp.size, storage.size)
            merkle.verify_consistency(cp.size, storage.size, cp.root, storage.checkpoint.root,
                                      proof)
    for i in range(storage.size):
        assert storage.entry(i) == entry_for(i)
    # The served checkpoint itself verifies and matches the tree.
    cp = open_checkpoint(storage.checkpoint_note, signer.verifier(), signer.name).checkpoint
    assert cp.root == storage.tree.root()


def _run_child(state: Path, signer: Signer, mode: str, seed: int, kill_after: float
               ) -> list[bytes]:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{CHILD.parent}")
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(state), signer.to_string(), mode, str(seed)],
        stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    notes: list[bytes] = []
    ready = proc.stdout.readline()
    assert ready.startswith(b"ready"), ready
    deadline = time.monotonic() + kill_after
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
        buf += proc.stdout.read() or b""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read() or b""
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # Only complete lines were printed after the checkpoint was durable and published.
    lines = buf.split(b"\n")
    notes.extend(base64.b64decode(line) for line in lines[:-1] if line)
    return notes


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["random", "mid-write", "before-fsync", "after-fsync",
                                  "before-copy"])
def test_sigkill_at_random_points_loses_and_forks_nothing(tmp_path: Path, signer: Signer,
                                                          mode: str) -> None:
    rng = random.Random(mode)
    published: list[bytes] = []
    for _ in range(4):
        published += _run_child(tmp_path, signer, mode, rng.randrange(1 << 30),
                                rng.uniform(0.05, 0.3))
        storage = LogStorage(tmp_path, signer)  # recovery after the crash
        _assert_serves_consistent(storage, signer, published)
        # The recovered log keeps working: the next append extends it.
        before = storage.size
        storage.append_batch([entry_for(before)])
        assert storage.size == before + 1
        published.append(storage.checkpoint_note)
        storage.close()
    assert len(published) > 4  # the child did publish checkpoints (the test is not vacuous)


class FailingOps(FileOps):
    """Fail the Nth write or fsync of the log file with an injected OSError."""

    def __init__(self, kind: str, at: int, err: int) -> None:
        self.kind, self.at, self.err, self.calls = kind, at, err, 0
        self.log_fd = -1

    def open(self, path: Path, flags: int) -> int:
        fd = super().open(path, flags)
        if path.name == LOG:
            self.log_fd = fd
        return fd

    def _tick(self, kind: str, fd: int) -> None:
        if kind == self.kind and fd == self.log_fd:
            self.calls += 1
            if self.calls == self.at:
                raise OSError(self.err, os.strerror(self.err))

    def write(self, fd: int, data: bytes) -> int:
        self._tick("write", fd)
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._tick("fsync", fd)
        super().fsync(fd)


@pytest.mark.parametrize(("kind", "err"), [("write", errno.ENOSPC), ("write", errno.EIO),
                                           ("fsync", errno.EIO), ("fsync", errno.ENOSPC)])
@pytest.mark.parametrize("at", [1, 2, 3])
def test_injected_failures_never_publish_or_fork(tmp_path: Path, signer: Signer, kind: str,
                                                 err: int, at: int) -> None:
    good = LogStorage(tmp_path, signer)
    good.append_batch([entry_for(i) for i in range(5)])
    published = [good.checkpoint_note]
    good.close()
    ops = FailingOps(kind, at, err)
    storage = LogStorage(tmp_path, signer, ops=ops)
    ops.calls = 0
    failures = 0
    for _ in range(4):
        before_note, before_size = storage.checkpoint_note, storage.size
        try:
            storage.append_batch([entry_for(storage.size + i) for i in range(3)])
        except StorageError:
            failures += 1
            assert storage.checkpoint_note == before_note  # nothing published
            assert storage.size == before_size
            continue
        published.append(storage.checkpoint_note)
    assert failures == 1  # exactly the injected failure surfaced (positive twin: others worked)
    _assert_serves_consistent(storage, signer, published)
    assert storage.size == 14
    storage.close()
    with LogStorage(tmp_path, signer) as reopened:
        _assert_serves_consistent(reopened, signer, published)
        assert reopened.size == 14


class BrokenCopyOps(FileOps):
    def replace(self, src: Path, dst: Path) -> None:
        raise OSError(errno.EIO, "injected")


def test_checkpoint_copy_is_best_effort(tmp_path: Path, signer: Signer) -> None:
    storage = LogStorage(tmp_path, signer, ops=BrokenCopyOps())
    storage.append_batch([entry_for(0), entry_for(1)])
    assert storage.size == 2
    assert not (tmp_path / CHECKPOINT).exists()
    storage.close()
    with LogStorage(tmp_path, signer) as reopened:
        assert reopened.size == 2
        assert (tmp_path / CHECKPOINT).read_bytes() == reopened.checkpoint_note


def test_tampered_files_are_refused(tmp_path: Path, signer: Signer) -> None:
    storage = LogStorage(tmp_path, signer)
    storage.append_batch([entry_for(i) for i in range(4)])
    storage.close()
    with LogStorage(tmp_path, signer) as reopened:
        assert reopened.size == 4  # positive twin
    data = bytearray((tmp_path / LOG).read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / LOG).write_bytes(bytes(data))
    with pytest.raises(StorageError):
        LogStorage(tmp_path, signer)
    with pytest.raises(StorageError):
        LogStorage(tmp_path, Signer.generate(signer.name))  # checkpoint not signed by this key
    (tmp_path / LOG).write_bytes(bytes(data[:3]))
    with pytest.raises(StorageError):
        LogStorage(tmp_path, signer)


def _try_mount_tmpfs(path: Path) -> bool:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                            capture_output=True, check=False)
    return result.returncode == 0


def test_disk_full(tmp_path: Path, signer: Signer) -> None:
    """A size-capped tmpfs when mount works here; otherwise ENOSPC through the write seam."""
    mnt = tmp_path / "small"
    mounted = _try_mount_tmpfs(mnt)
    ops: FileOps = FileOps() if mounted else FailingOps("write", 30, errno.ENOSPC)
    try:
        storage = LogStorage(mnt, signer, ops=ops)
        published = [storage.checkpoint_note]
        full = False
        for _ in range(400):
            try:
                storage.append_batch([entry_for(storage.size + i) for i in range(8)])
            except StorageError:
                full = True
                break
            published.append(storage.checkpoint_note)
        assert full, "the disk never filled"
        assert len(published) > 2
        _assert_serves_consistent(storage, signer, published)
        storage.close()
        reopened = LogStorage(mnt, signer, ops=FileOps())
        _assert_serves_consistent(reopened, signer, published)
        reopened.close()
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


def test_missing_checkpoint_means_empty_log(tmp_path: Path, signer: Signer) -> None:
    storage = LogStorage(tmp_path, signer)
    assert storage.size == 0
    assert (tmp_path / CHECKPOINT).exists()
    with pytest.raises(VerificationError):
        open_checkpoint(storage.checkpoint_note, Signer.generate(signer.name).verifier(),
                        signer.name)
    storage.close()


def test_second_writer_process_is_refused(tmp_path: Path, signer: Signer) -> None:
    storage = LogStorage(tmp_path, signer)
    code = ("import sys; from transparency_log.note import Signer; "
            "from transparency_log.storage import LogStorage, StorageError\n"
            "try:\n LogStorage(sys.argv[1], Signer.from_string(sys.argv[2]))\n"
            "except StorageError:\n sys.exit(3)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-c", code, str(tmp_path), signer.to_string()]
    assert subprocess.run(args, env=env, check=False).returncode == 3
    storage.close()
    assert subprocess.run(args, env=env, check=False).returncode == 0  # twin: lock released
