"""Request data does not survive in the engine process's memory (issue 9 item 3b), seen the way
an outsider would see it: a child process runs the engine under the node's memory hygiene
(`node.hygiene`) and the test reads its writable memory through /proc/PID/mem.

Needles: the canary's K/V vectors of layers >= 1 (which no other prompt can recreate), computed
here by the same tiny model, and its token ids packed as int64 (as in the runner's index
tensors). Positive twin: while the canary is live, both are found; after it ended, other
requests ran and the engine went idle, none is.

Reading another process's memory needs ptrace access to it: the same uid and a dumpable process
suffice without Yama; under Yama `ptrace_scope` 1 a parent may read its own child (this case);
scope 2 needs CAP_SYS_PTRACE and scope 3 forbids it (the test then cannot run and says so).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from node.engine.batch import ForwardChunk
from node.engine.runner import tiny_runner
from node.hygiene import hygienic_environment
from tests.node.engine.memory_child import CANARY

CHUNK = 1 << 24


def kv_needles() -> list[bytes]:
    """The canary's K and V vectors (one per layer >= 1, position, KV head), as fp32 bytes."""
    runner = tiny_runner(num_blocks=64, block_size=4)
    runner.forward([ForwardChunk(CANARY, 0, tuple(range(64)), 1)])
    c = runner.config
    kv = runner.kv_pool.view(c.num_layers, 2, -1, c.num_kv_heads, c.head_dim)[1:, :, :len(CANARY)]
    return [v.numpy().tobytes() for v in kv.reshape(-1, c.head_dim)]


def token_needles() -> list[bytes]:
    """Every window of four consecutive canary ids, packed as little-endian int64."""
    return [np.array(CANARY[i:i + 4], dtype="<i8").tobytes() for i in range(len(CANARY) - 3)]


def found_in_memory(pid: int, needles: list[bytes]) -> set[bytes]:
    """The needles present anywhere in the writable memory of process `pid`."""
    by_key: dict[int, list[bytes]] = {}
    for n in needles:
        by_key.setdefault(int.from_bytes(n[:4], "little"), []).append(n)
    keys = np.array(sorted(by_key), dtype=np.uint32)
    longest = max(len(n) for n in needles)
    found: set[bytes] = set()
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    with Path(f"/proc/{pid}/mem").open("rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
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


def expect(child: subprocess.Popen[str], word: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line == word, f"child said {line!r}, expected {word!r}"


def go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


def ptrace_scope() -> int:
    path = Path("/proc/sys/kernel/yama/ptrace_scope")
    return int(path.read_text()) if path.exists() else 0


@pytest.mark.skipif(ptrace_scope() >= 3 or (ptrace_scope() == 2 and os.geteuid() != 0),
                    reason="Yama forbids reading a child's memory here")
def test_no_canary_kv_or_token_ids_in_process_memory_after_the_request_ended() -> None:
    kv, tokens = kv_needles(), token_needles()
    env = hygienic_environment(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.node.engine.memory_child", str(torch.get_num_threads())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        expect(child, "live")
        live = found_in_memory(child.pid, kv + tokens)
        assert len(live & set(kv)) == len(kv), "positive twin: the live canary's K/V are found"
        assert live & set(tokens), "positive twin: the live canary's token ids are found"
        go(child)
        expect(child, "ended")
        left = found_in_memory(child.pid, kv + tokens)
        kv_left, tokens_left = len(left & set(kv)), len(left & set(tokens))
        assert kv_left == 0, f"{kv_left} of {len(kv)} canary K/V vectors left in memory"
        assert tokens_left == 0, "canary token ids left in memory"
        go(child)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
