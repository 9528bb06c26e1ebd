"""Decode graphs: the static-buffer decode path gives the eager logits, and leaves nothing behind.

On CPU the path runs without capture (`cuda_graphs=True` there means: static buffers, eager);
the gpu-marked tests replay real captured CUDA graphs against the eager runner.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from node.engine.batch import ForwardChunk
from node.engine.graphs import buckets
from node.engine.model import ModelConfig, random_weights, tiny_hf_config
from node.engine.runner import PagedRunner
from tests.node.engine.engine_helpers import (
    SALT_A,
    TinyEngine,
    collect,
    make_engine,
    req,
    tokens_of,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (none here)")


def runners(device: str = "cpu", dtype: torch.dtype = torch.float32
            ) -> tuple[PagedRunner, PagedRunner]:
    w = random_weights(ModelConfig.from_hf(tiny_hf_config()), 7)

    def make(*, graphs: bool) -> PagedRunner:
        return PagedRunner(w, num_blocks=40, block_size=4, device=device, dtype=dtype,
                           max_model_len=64, attention="padded", cuda_graphs=graphs,
                           max_graph_batch=4)

    return make(graphs=True), make(graphs=False)


def run_decodes(r: PagedRunner) -> torch.Tensor:
    """Three sequences prefilled, then five decode steps of 3 rows (bucket 4: one padding row).

    Returns the decode logits `[steps, 3, vocab]`.
    """
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (5, 13, 22)]
    tables = [[3, 9, 15], [12, 4, 30, 31, 16], [0, 1, 2, 5, 6, 7, 8]]
    out = r.forward([ForwardChunk(s, 0, t, 1) for s, t in zip(seqs, tables, strict=True)])
    steps = []
    for step in range(5):
        toks = [int(o[-1].argmax()) for o in out]
        out = r.forward([ForwardChunk([t], len(s) + step, tb, 1)
                         for t, s, tb in zip(toks, seqs, tables, strict=True)])
        steps.append(torch.cat(out))
    return torch.stack(steps)


def test_buckets():
    assert buckets(1) == [1]
    assert buckets(5) == [1, 2, 4, 8]
    assert buckets(16) == [1, 2, 4, 8, 16]


def test_static_decode_path_matches_eager_and_pads_into_the_trash_block():
    static, eager = runners()
    assert static.graphs is not None
    assert eager.graphs is None
    got, want = run_decodes(static), run_decodes(eager)
    assert torch.allclose(got, want, atol=1e-5)
    # the padding row wrote into the trash block only: the pool's own blocks match the eager one
    assert torch.equal(static.kv_pool != 0, eager.kv_pool != 0)
    assert not static.kv_pool_is_zero()  # the trash block (and the sequences' blocks) hold K/V
    static.zero_blocks(range(40))
    assert not static.kv_pool_is_zero()  # twin: the trash block is not one of the 40 ...
    static.clear_scratch()
    assert static.kv_pool_is_zero()  # ... and going idle zeroes it


def test_engine_with_decode_graph_path_gives_eager_tokens_and_erases():
    prompts = [list(range(10, 30)), [5, 6, 7], list(range(200, 209))]

    async def go(graphs: bool) -> list[list[int]]:
        eng: TinyEngine = make_engine(num_blocks=64)
        if graphs:
            eng.runner = PagedRunner(
                random_weights(eng.runner.config, 0), num_blocks=64, block_size=4,
                cuda_graphs=True, max_graph_batch=2)
            eng.scheduler.blocks._zero_blocks = eng.runner.zero_blocks
        outs = await asyncio.gather(*(collect(eng.submit(req(p, max_tokens=9), SALT_A))
                                      for p in prompts))
        await eng.close()
        assert eng.runner.kv_pool_is_zero()
        assert eng.runner.scratch_is_zero()
        return [tokens_of(o) for o in outs]

    assert asyncio.run(go(graphs=True)) == asyncio.run(go(graphs=False))


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replay_gives_the_eager_tokens():
    static, eager = runners("cuda", torch.bfloat16)
    assert static.graphs is not None
    assert all(g.graph is not None for g in static.graphs.graphs.values())
    got, want = run_decodes(static), run_decodes(eager)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert (got - want).abs().max().item() <= 5e-2 * want.abs().max().item()


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replay_keeps_erasure():
    static, _ = runners("cuda", torch.bfloat16)
    run_decodes(static)
    used = [3, 9, 15, 12, 4, 30, 31, 16, 0, 1, 2, 5, 6, 7, 8]
    assert not static.kv_pool_is_zero(used)
    assert static.kv_pool_is_zero([b for b in range(40) if b not in used])
    static.zero_blocks(used)
    assert static.kv_pool_is_zero(used)
    static.clear_scratch()
    assert static.kv_pool_is_zero()
