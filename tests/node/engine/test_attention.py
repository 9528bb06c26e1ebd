"""The attention backends' layouts: the flex block mask reaches every key its rows attend.

Eager FlexAttention (the CPU path of the tests) applies the mask to the whole pool and ignores
the block-sparse structure that the compiled CUDA kernel relies on, so the structure is checked
here on its own: every (query tile, pool block) pair where the mask is true somewhere must be
listed, and blocks no row attends must not be (the mask prunes).
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from hushcc.errors import ConfigError
from node.engine.attention import Q_TILE, ChunkSpan, FlexLayout, resolve_backend
from node.engine.batch import ForwardChunk
from node.engine.runner import tiny_runner
from tests.node.engine.engine_helpers import (
    SALT_A,
    collect,
    make_engine,
    reference_greedy,
    req,
    tokens_of,
)

BS, NB = 4, 40


def spans_of(chunks: list[tuple[int, int, list[int]]]) -> list[ChunkSpan]:
    """(length, start, table) -> spans with contiguous rows."""
    out, row = [], 0
    for n, start, table in chunks:
        out.append(ChunkSpan(row, n, start, table[:-(-(start + n) // BS)]))
        row += n
    return out


def dense(layout: FlexLayout, total: int) -> torch.Tensor:
    q = torch.arange(total)[:, None]
    kv = torch.arange(NB * BS)[None, :]
    zero = torch.zeros(())
    return layout.mask_mod(zero, zero, q, kv)


def listed(layout: FlexLayout) -> set[tuple[int, int]]:
    bm = layout.block_mask
    nums, idx = bm.kv_num_blocks[0, 0], bm.kv_indices[0, 0]
    return {(t, int(b)) for t in range(nums.shape[0]) for b in idx[t, :int(nums[t])]}


STEPS = [
    pytest.param([(1, 9, [5, 2, 7]), (1, 0, [1]), (3, 13, [3, 4, 8, 9, 10])], id="decodes"),
    pytest.param([(37, 0, list(range(10, 20))), (1, 5, [0, 1]), (20, 4, [21, 22, 23, 24, 25, 26])],
                 id="mixed-prefill"),
    pytest.param([(18, 0, [30, 31, 32, 33, 34]), (2, 16, [30, 31, 32, 33, 35])],
                 id="shared-prefix-blocks"),
]


@pytest.mark.parametrize("chunks", STEPS)
def test_flex_block_mask_lists_every_attended_block_and_prunes(chunks):
    spans = spans_of(chunks)
    total = sum(n for n, _, _ in chunks)
    layout = FlexLayout(spans, total, BS, NB, torch.device("cpu"))
    mask = dense(layout, total)
    need = {(q // Q_TILE, kv // BS) for q, kv in mask.nonzero().tolist()}
    have = listed(layout)
    assert need <= have
    assert len(have) < -(-total // Q_TILE) * NB  # the twin: not every block of the pool
    # each row attends exactly its sequence's positions 0..p
    for c, s in enumerate(spans):
        for i in range(s.length):
            row = mask[s.row0 + i].nonzero().flatten().tolist()
            pos = s.start + i
            want = sorted(s.table[p // BS] * BS + p % BS for p in range(pos + 1))
            assert row == want, (c, i)


def test_shared_block_attended_by_both_sequences():
    """Two sequences of one step reading one prefix block both see it (no single owner)."""
    r = tiny_runner(num_blocks=16, block_size=4)
    ids = list(range(40, 52))
    for backend in ("flex", "padded", "grouped"):
        runner = tiny_runner(num_blocks=16, block_size=4, attention=backend)
        runner.forward([ForwardChunk(ids[:8], 0, [1, 2], 0)])  # the shared prefix
        got = runner.forward([ForwardChunk(ids[8:], 8, [1, 2, 3], 1),
                              ForwardChunk(ids[8:11], 8, [1, 2, 4], 1)])
        r.zero_blocks(list(range(16)))
        alone = [r.forward([ForwardChunk(ids, 0, [1, 2, 3], 1)])[0],
                 r.forward([ForwardChunk(ids[:11], 0, [1, 2, 4], 1)])[0]]
        for x, y in zip(got, alone, strict=True):
            assert torch.allclose(x, y, atol=1e-5), backend


def test_backend_defaults_and_names():
    cpu = torch.device("cpu")
    assert resolve_backend(None, cpu, 16) == "grouped"
    assert resolve_backend("flex", cpu, 4) == "flex"
    with pytest.raises(ConfigError):
        resolve_backend("flash", cpu, 16)


@pytest.mark.parametrize("backend", ["flex", "padded", "grouped"])
def test_engine_on_each_backend_gives_the_plain_greedy_tokens(backend):
    """Concurrent requests, chunked prefill, shared prefixes and draft verification in steps."""
    prompts = [[7, 8, 9, 7, 8, 9, 7, 8] * 3, [7, 8, 9, 7, 8, 9, 7, 8] * 3 + [5, 6],
               list(range(100, 131)), [3, 4]]

    async def go() -> tuple[list[list[int]], int]:
        eng = make_engine(num_blocks=96, spec=True, budget=24, attention=backend)
        assert eng.runner.attention == backend
        outs = await asyncio.gather(*(collect(eng.submit(req(p, max_tokens=10), SALT_A))
                                      for p in prompts))
        drafts = eng.stats().draft_tokens
        await eng.close()
        assert eng.runner.kv_pool_is_zero()
        return [tokens_of(o) for o in outs], drafts

    got, drafts = asyncio.run(go())
    assert got == [reference_greedy(p, 10) for p in prompts]
    assert drafts > 0  # draft verification chunks did go through the backend
