"""Reading a child process's writable memory from outside, as an outsider would (/proc/PID/mem).

Reading another process's memory needs ptrace access to it: the same uid and a dumpable process
suffice without Yama; under Yama `ptrace_scope` 1 a parent may read its own child (the tests'
case); scope 2 needs CAP_SYS_PTRACE and scope 3 forbids it (`readable_children` then skips).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

CHUNK = 1 << 24


def found_in_memory(pid: int, needles: list[bytes], skip: tuple[str, ...] = ()) -> set[bytes]:
    """The needles present anywhere in the writable memory of process `pid`.

    Args:
        pid: the process to read.
        needles: byte strings to look for (each at least 4 bytes).
        skip: names of mappings not to read (as /proc/PID/maps names them, e.g. "[stack]").
    """
    by_key: dict[int, list[bytes]] = {}
    for n in needles:
        by_key.setdefault(int.from_bytes(n[:4], "little"), []).append(n)
    keys = np.array(sorted(by_key), dtype=np.uint32)
    longest = max(len(n) for n in needles)
    found: set[bytes] = set()
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    with Path(f"/proc/{pid}/mem").open("rb", buffering=0) as mem:
        for line in maps:
            span, perms, *rest = line.split()
            if not perms.startswith("rw") or (len(rest) == 4 and rest[3] in skip):
                continue
            start, end = (int(a, 16) for a in span.split("-"))
            for off in range(start, end, CHUNK):
                try:
                    mem.seek(off)
                    data = mem.read(min(CHUNK + longest, end - off))
                except OSError:  # e.g. [vvar]: not readable this way
                    break
                words = np.frombuffer(data, dtype=np.uint32, count=len(data) // 4)
                at = np.searchsorted(keys, words)
                at[at == len(keys)] = 0
                for i in np.flatnonzero(keys[at] == words):
                    o = int(i) * 4
                    found.update(n for n in by_key[int(words[i])] if data[o:o + len(n)] == n)
    return found


def ptrace_scope() -> int:
    path = Path("/proc/sys/kernel/yama/ptrace_scope")
    return int(path.read_text()) if path.exists() else 0


readable_children = pytest.mark.skipif(
    ptrace_scope() >= 3 or (ptrace_scope() == 2 and os.geteuid() != 0),
    reason="Yama forbids reading a child's memory here")
