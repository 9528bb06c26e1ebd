"""Request data does not survive in the engine process's memory (issue 9 item 3b), seen the way
an outsider would see it: a child process runs the engine under the node's memory hygiene
(`node.hygiene`) and the test reads its writable memory through /proc/PID/mem.

Needles: the canary's K/V vectors of layers >= 1 (which no other prompt can recreate), computed
here by the same tiny model, and its token ids packed as int64 (as in the runner's index
tensors). Positive twin: while the canary is live, both are found; after it ended, other
requests ran and the engine went idle, none is.

Reading the child's memory needs ptrace access to it (`tests.node.memory_scan`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from node.engine.batch import ForwardChunk
from node.engine.runner import tiny_runner
from node.hygiene import LIBRARY, hygienic_environment, requested_mode
from tests.node.engine.memory_child import CANARY
from tests.node.memory_scan import found_in_memory, readable_children

if TYPE_CHECKING:
    from pathlib import Path


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


def expect(child: subprocess.Popen[str], word: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line == word, f"child said {line!r}, expected {word!r}"


def go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


@readable_children
@pytest.mark.parametrize("library", [LIBRARY, None], ids=["erase_on_free", "glibc_perturb"])
def test_no_canary_kv_or_token_ids_in_process_memory_after_the_request_ended(
        library: Path | None) -> None:
    kv, tokens = kv_needles(), token_needles()
    env = hygienic_environment(os.environ, library)
    assert requested_mode(env) == ("glibc_perturb" if library is None else "erase_on_free")
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
