"""The paged KV pool: zeroed on allocation, written only through block tables, zeroed on free."""

from __future__ import annotations

import pytest
import torch

from hushcc.errors import ConfigError, ProtocolError
from node.engine.batch import ForwardChunk
from node.engine.model import ModelConfig, random_weights, tiny_hf_config
from node.engine.runner import PagedRunner, tiny_runner


def test_pool_allocated_zero_and_shaped():
    r = tiny_runner(num_blocks=8, block_size=4)
    assert r.kv_pool_is_zero()
    assert r.kv_pool.shape == (2, 2, 8, 4, 2, 16)
    assert (r.block_size, r.num_blocks) == (4, 8)


def test_forward_writes_only_its_blocks_and_zero_blocks_erases_them():
    r = tiny_runner(num_blocks=8, block_size=4)
    r.forward([ForwardChunk(list(range(10, 20)), 0, [5, 2, 7], 1)])
    assert not r.kv_pool_is_zero()
    assert not r.kv_pool_is_zero([5])
    assert not r.kv_pool_is_zero([7])  # positions 8, 9 land in the third block
    assert r.kv_pool_is_zero([0, 1, 3, 4, 6])
    r.zero_blocks([5, 2])
    assert r.kv_pool_is_zero([5, 2])
    assert not r.kv_pool_is_zero()  # block 7 still holds KV: the twin of the next assertion
    r.zero_blocks([7])
    assert r.kv_pool_is_zero()
    r.zero_blocks([])
    assert r.kv_pool_is_zero([])


def test_prefix_in_blocks_is_reused_across_calls():
    """KV before start_pos is read from the blocks: computing with and without it differs."""
    r = tiny_runner(num_blocks=8, block_size=4)
    ids = list(range(30, 42))
    full = r.forward([ForwardChunk(ids, 0, [1, 2, 3], 1)])[0]
    r.zero_blocks([1, 2, 3])
    r.forward([ForwardChunk(ids[:8], 0, [1, 2, 3], 0)])
    split = r.forward([ForwardChunk(ids[8:], 8, [1, 2, 3], 1)])[0]
    assert torch.allclose(full, split, atol=1e-5)
    r.zero_blocks([1, 2])  # the prefix erased: the same chunk now gives different logits
    erased = r.forward([ForwardChunk(ids[8:], 8, [1, 2, 3], 1)])[0]
    assert not torch.allclose(full, erased, atol=1e-3)


def test_zero_logit_chunk_returns_empty_rows():
    r = tiny_runner(num_blocks=8, block_size=4)
    out = r.forward([ForwardChunk([1, 2, 3], 0, [0], 0), ForwardChunk([4, 5], 0, [1], 2)])
    assert [tuple(o.shape) for o in out] == [(0, 512), (2, 512)]
    assert r.forward([]) == []


@pytest.mark.parametrize("chunk", [
    pytest.param(ForwardChunk([], 0, [0], 0), id="empty"),
    pytest.param(ForwardChunk([1] * 9, 0, [0, 1], 1), id="table-too-short"),
    pytest.param(ForwardChunk([1], 0, [8], 1), id="block-out-of-pool"),
    pytest.param(ForwardChunk([1], 0, [-1], 1), id="negative-block"),
    pytest.param(ForwardChunk([1, 2], 0, [0], 3), id="too-many-logits"),
    pytest.param(ForwardChunk([1], 600, list(range(8)), 1), id="past-max-len"),
])
def test_bad_chunks_rejected_before_writing(chunk):
    r = tiny_runner(num_blocks=8, block_size=4)
    with pytest.raises(ProtocolError):
        r.forward([chunk])
    assert r.kv_pool_is_zero()
    r.forward([ForwardChunk([1], 0, [0], 1)])  # the twin: a good chunk goes through
    assert not r.kv_pool_is_zero()


def test_bad_pool_sizes():
    with pytest.raises(ConfigError):
        tiny_runner(num_blocks=0)
    assert isinstance(tiny_runner(num_blocks=1), PagedRunner)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_cuda_pool_zeroed_and_erased():
    w = random_weights(ModelConfig.from_hf(tiny_hf_config()), 0)
    r = PagedRunner(w, num_blocks=8, block_size=4, device="cuda")
    assert r.kv_pool.is_cuda
    assert r.kv_pool_is_zero()
    r.forward([ForwardChunk([1, 2, 3, 4, 5], 0, [3, 6], 1)])
    assert not r.kv_pool_is_zero()
    r.zero_blocks([3, 6])
    assert r.kv_pool_is_zero()


def test_kv_gathers_reuse_one_scratch_buffer_zeroed_when_idle():
    """A decode gathers its blocks into `Scratch.kv`, the same buffer every step (no
    allocation to erase); `clear_scratch` (the idle engine's call) zeroes it."""
    r = tiny_runner(num_blocks=8, block_size=4)
    r.forward([ForwardChunk(list(range(10, 20)), 0, [5, 2, 7], 1)])  # starts at 0: no gather
    assert r.scratch_is_zero() is False  # the twin: the step left its rows in the scratch
    r.clear_scratch()
    assert r._scratch.kv.numel() == 0
    r.forward([ForwardChunk([21], 10, [5, 2, 7], 1)])  # a decode: reads its 3 blocks
    buffer = r._scratch.kv
    assert bool(buffer.any())  # the gathered K/V are there ...
    blocks = torch.tensor([5, 2, 7])
    with torch.inference_mode():  # as in `forward`: the buffers are inference tensors
        for layer in range(r.config.num_layers):  # ... as the pool holds them
            pool = r.layer_pool(layer)
            assert torch.equal(r._scratch.gather(pool, blocks),
                               pool.index_select(1, blocks))
    r.forward([ForwardChunk([22], 11, [5, 2, 7], 1)])
    assert r._scratch.kv.data_ptr() == buffer.data_ptr()
    r.clear_scratch()
    assert r.scratch_is_zero()
    assert not bool(buffer.any())


def test_in_place_rope_and_norm_round_as_the_reference():
    """The runner's in-place RoPE and RMSNorm give the reference formulas' bits exactly."""
    from node.engine.runner import _rms_norm, _rope_  # noqa: PLC0415

    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, 16, generator=g)
    cos, sin = torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g)
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    want = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    assert torch.equal(_rope_(x.clone(), cos, sin), want)
    assert not torch.equal(_rope_(x.clone(), sin, cos), want)  # twin: the check can fail
    h, w = torch.randn(7, 80, generator=g), torch.randn(80, generator=g)
    assert torch.equal(_rms_norm(h, w, 1e-5), h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True)
                                                                + 1e-5) * w)


def test_a_smaller_step_leaves_nothing_of_a_larger_one_in_the_scratch():
    """Under load the engine never idles, so `clear_scratch` never runs: each step must itself
    zero what an earlier, larger step left in the reused buffers past its own extent."""
    r = tiny_runner(num_blocks=16, block_size=4)
    canary = list(range(400, 440))  # token ids no other chunk here uses
    r.forward([ForwardChunk(canary, 0, list(range(10)), 1)])  # 40 rows, attends its fresh K/V
    r.forward([ForwardChunk([7], 11, [10, 11, 12], 1),  # two decodes: 6 blocks gathered
               ForwardChunk([8], 11, [13, 14, 15], 1)])
    big = r._scratch.kv.count_nonzero()
    assert big > 0
    r.forward([ForwardChunk(canary[:1], 39, list(range(10)), 1)])  # twin of the last check
    assert set(canary[:1]) <= set(r._scratch.index[0].tolist())
    r.forward([ForwardChunk(canary[:32], 0, list(range(8)), 1)])  # 32 rows of the canary
    assert set(canary[:32]) <= set(r._scratch.index[0].tolist())  # the twin: they are there
    assert bool(r._scratch.hidden[31].any())
    r.forward([ForwardChunk([9], 12, [10, 11, 12, 13], 1)])  # 1 row; 4 blocks gathered
    assert not set(canary) & set(r._scratch.index.flatten().tolist())
    assert bool(r._scratch.hidden[0].any())  # this step's own row stays until the next step
    assert not bool(r._scratch.hidden[1:].any())
    one = 2 * 4 * r.block_size * r.config.num_kv_heads * r.config.head_dim  # 4 blocks, K and V
    assert bool(r._scratch.kv[:one].any())
    assert not bool(r._scratch.kv[one:].any())  # the 6-block gather's tail is gone
    r.forward([ForwardChunk(list(range(20, 32)), 0, [13, 14, 15], 1)])  # long, from 0: no gather
    assert not bool(r._scratch.kv.any())  # so the last gather is gone too
    r.clear_scratch()
    assert r.scratch_is_zero()
