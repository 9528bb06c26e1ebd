"""Child process for the crash tests: append batches forever, printing each published checkpoint.

argv: STATE_DIR SIGNER_KEY MODE SEED. MODE picks where the child SIGKILLs itself:
`random` (the parent kills it), or a named point inside the append protocol.
Entry contents are a function of their index, so the parent can check nothing was lost.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import sys
from pathlib import Path

from transparency_log.note import Signer
from transparency_log.storage import FileOps, LogStorage


def entry_for(index: int) -> bytes:
    return f"entry-{index}".encode() * (1 + index % 7)


class KillingOps(FileOps):
    def __init__(self, mode: str, rng: random.Random) -> None:
        self.mode = mode
        self.rng = rng
        self.armed = False

    def _maybe_die(self, point: str) -> None:
        if self.armed and self.mode == point and self.rng.random() < 0.2:
            os.kill(os.getpid(), signal.SIGKILL)

    def write(self, fd: int, data: bytes) -> int:
        if self.armed and self.mode == "mid-write" and len(data) > 4 and self.rng.random() < 0.2:
            os.write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_die("before-fsync")
        super().fsync(fd)
        self._maybe_die("after-fsync")  # durable but not yet published

    def replace(self, src: Path, dst: Path) -> None:
        self._maybe_die("before-copy")
        super().replace(src, dst)


def main() -> None:
    state, key, mode, seed = sys.argv[1:5]
    rng = random.Random(int(seed))
    ops = KillingOps(mode, rng)
    storage = LogStorage(state, Signer.from_string(key), ops=ops)
    print("ready", storage.size, flush=True)  # noqa: T201 - the protocol with the parent
    ops.armed = True
    while True:
        n = rng.randint(1, 20)
        batch = [entry_for(storage.size + i) for i in range(n)]
        _, note = storage.append_batch(batch)
        print(base64.b64encode(note).decode(), flush=True)  # noqa: T201 - ditto


if __name__ == "__main__":
    main()
