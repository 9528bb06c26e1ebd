"""node.hygiene, seen from outside: no freed heap block keeps what it held, whatever its size
or the call that gave it back (free, a realloc that moves a block, a realloc that shrinks one),
and freed Python objects neither. Both ways of the hygiene are checked, each against the same
child without it (the positive twin: there, the same freed blocks still hold their needles, so
the scan and the child's steps can fail).

The main thread's stack is not scanned: C code leaves copies of what it handled there (the
hygiene is about the heap; the stack is among its limits in docs/threat-model.md). The child
allocates through the C library (ctypes), fills each block with a needle of its own, gives it
back, and stops; the test then reads its writable memory through /proc/PID/mem. The
needles come from a seed and a case name (a seeded `random.Random`, whose work stays on the
heap), so no copy of one reaches the child except through the steps under test: the derivations'
own temporaries are freed objects too.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from node.hygiene import LIBRARY, hygienic_environment, requested_mode
from tests.node.memory_scan import found_in_memory, readable_children

if TYPE_CHECKING:
    from pathlib import Path

CHILD = r"""
import ctypes, random, sys

c = ctypes.CDLL(None)
c.malloc.restype = c.realloc.restype = ctypes.c_void_p
c.malloc.argtypes = [ctypes.c_size_t]
c.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
c.free.argtypes = [ctypes.c_void_p]
seed = sys.stdin.readline().strip()
guards = []

def needle(case):
    return random.Random(seed + case).randbytes(32).hex().encode()  # 64 bytes

def block(case, size):
    p = c.malloc(size)
    guards.append(c.malloc(64))  # the block is never next to the heap's top: no merge, no trim
    ctypes.memmove(p, needle(case) * (size // 64), size // 64 * 64)
    return p

for case, size in [("free 256 B", 256), ("free 1000 B", 1000), ("free 4 KiB", 4096),
                   ("free 64 KiB", 65536), ("free 4 MiB", 4 << 20)]:
    c.free(block(case, size))
moving = c.realloc(block("realloc moves the block", 640), 1 << 16)
ctypes.memset(moving, 0, 1 << 16)  # the live copy is the caller's: only the old one must go
shrunk = c.realloc(block("realloc shrinks the block", 8192), 1024)
ctypes.memset(shrunk, 0, 1024)
text = "".join(["x", needle("python str").decode()] * 40)
data = text.encode()
small = str(needle("python small str").decode())
del text, data, small
print("freed", flush=True)
sys.stdin.readline()
"""
CASES = ["free 256 B", "free 1000 B", "free 4 KiB", "free 64 KiB", "free 4 MiB",
         "realloc moves the block", "realloc shrinks the block", "python str", "python small str"]
# Without the hygiene glibc keeps these as they were (past the first 16 bytes, its list links);
# a 4 KiB chunk may be split again for later allocations, and 4 MiB goes back to the kernel.
KEPT_WITHOUT_HYGIENE = set(CASES) - {"free 4 KiB", "free 4 MiB"}


def leftover(env: dict[str, str]) -> set[str]:
    """The cases whose needle is still in the child's memory after it freed every block."""
    seed = os.urandom(16).hex()
    needles = {random.Random(seed + case).randbytes(32).hex().encode(): case for case in CASES}
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        child.stdin.write(seed + "\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "freed"
        found = found_in_memory(child.pid, list(needles), skip=("[stack]",))
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return {needles[n] for n in found}


@readable_children
@pytest.mark.parametrize("library", [LIBRARY, None], ids=["erase_on_free", "glibc_perturb"])
def test_freed_blocks_keep_nothing_under_the_hygiene(library: Path | None) -> None:
    env = hygienic_environment(os.environ, library)
    assert requested_mode(env) == ("glibc_perturb" if library is None else "erase_on_free")
    assert leftover(env) == set()


@readable_children
def test_without_the_hygiene_the_same_blocks_keep_their_needles() -> None:  # positive twin
    plain = {k: v for k, v in os.environ.items()
             if k not in {"LD_PRELOAD", "GLIBC_TUNABLES", "PYTHONMALLOC", "MKL_DISABLE_FAST_MM"}}
    assert leftover(plain) >= KEPT_WITHOUT_HYGIENE
