"""No K/V of an ended request in the CUDA caching allocator's free memory once the engine idles.

The search reads the allocator's free blocks with `torch.empty` (`hold_free_blocks`), as any
later allocation of the process would, and looks for the canary request's K vectors there.
Off CUDA only the no-op and the search helper itself are checked.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from node.engine.device_memory import scrub_free_memory
from node.engine.engine import Engine, EngineConfig
from node.engine.model import ModelConfig, random_weights, tiny_hf_config
from node.engine.runner import PagedRunner
from node.engine.sequence import EngineLimits
from tests.node.engine.engine_fakes import ToyTokenizer
from tests.node.engine.engine_helpers import SALT_A, req

CANARY = [101, 7, 333, 42, 250, 19, 480, 66, 5, 211, 97, 300, 12, 150, 401, 88, 23, 175]


def contains(hay: torch.Tensor, needle: torch.Tensor) -> bool:
    """True when the 16-bit words of `needle` occur contiguously in the bytes of `hay`."""
    words = hay[: hay.numel() // 2 * 2].view(torch.int16)
    nd = needle.contiguous().view(torch.int16).to(hay.device)
    n = nd.numel()
    if words.numel() < n:
        return False
    starts = (words[: words.numel() - n + 1] == nd[0]).nonzero().flatten()
    offsets = torch.arange(n, device=hay.device)
    for part in starts.split(65536):
        if bool((words[part[:, None] + offsets] == nd).all(1).any()):
            return True
    return False


def test_search_helper_and_cpu_no_op():
    hay = torch.randint(0, 255, (4096,), dtype=torch.uint8)
    needle = hay[1000:1032].clone()
    assert contains(hay, needle.view(torch.int16))
    assert not contains(torch.zeros(4096, dtype=torch.uint8), needle.view(torch.int16))
    assert scrub_free_memory(torch.device("cpu")) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_no_kv_of_an_ended_request_in_free_device_memory(monkeypatch: pytest.MonkeyPatch):
    from node.engine.device_memory import hold_free_blocks  # noqa: PLC0415

    weights = random_weights(ModelConfig.from_hf(tiny_hf_config(head_dim=64, hidden_size=256)), 1)
    runner = PagedRunner(weights, num_blocks=64, block_size=16, device="cuda")
    limits = EngineLimits(max_model_len=256, max_tokens_cap=64, max_num_seqs=8,
                          max_num_batched_tokens=64, max_draft_tokens=4)
    engine = Engine(runner, ToyTokenizer(), EngineConfig(limits=limits, vocab_size=512))
    scrubs: list[torch.device] = []

    def no_scrub(device: torch.device) -> int:
        scrubs.append(device)
        return 0

    monkeypatch.setattr("node.engine.runner.scrub_free_memory", no_scrub)

    async def go() -> torch.Tensor:
        stream = engine.submit(req(CANARY, max_tokens=6), SALT_A)
        it = aiter(stream)
        await anext(it)  # the prompt is in the pool now
        block = engine.scheduler.running[0].block_table[0]
        needle = runner.kv_pool[0, 0, block, 3, 0].clone()  # layer 0, K, 4th token, head 0
        assert contains(runner.kv_pool.reshape(-1).view(torch.uint8), needle)  # live: found
        async for _ in it:
            pass
        await engine.close()
        return needle

    needle = asyncio.run(go())
    assert scrubs  # the engine went idle (its scrub replaced by a no-op for the twin)
    assert runner.kv_pool_is_zero()
    torch.cuda.synchronize()
    held = hold_free_blocks(torch.device("cuda"))
    assert any(contains(t, needle) for t in held)  # twin: unscrubbed free memory keeps it
    del held
    monkeypatch.undo()
    runner.clear_scratch()  # what the idle engine does, with the real scrub
    assert runner.scrubbed_bytes > 0
    held = hold_free_blocks(torch.device("cuda"))
    assert not any(contains(t, needle) for t in held)
    assert all(not bool(t.any()) for t in held)
