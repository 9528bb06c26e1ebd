"""Block manager: states, refcounts, zero-before-reuse, batched zeroing, cache eviction zeroes."""

from __future__ import annotations

import pytest

from node.engine.blocks import BlockManager, BlockPoolExhaustedError, BlockState
from node.engine.prefix_cache import PrefixCache
from tests.node.engine.engine_fakes import FakePool


def make(n: int = 4, *, cache: bool = False) -> tuple[FakePool, BlockManager]:
    pool = FakePool(n, 2)
    bm = BlockManager(n, 2, pool.zero_blocks, PrefixCache(ttl=10.0) if cache else None)
    return pool, bm


def dirty(pool: FakePool, blocks: list[int]) -> None:
    for b in blocks:
        pool.slots[b] = [(b"t", 1), (b"t", 2)]


def released_cached(n: int) -> tuple[FakePool, BlockManager, list[int]]:
    """All `n` blocks of a caching manager written, registered (hash = index) and released."""
    pool, bm = make(n, cache=True)
    blocks = bm.allocate(n)
    dirty(pool, blocks)
    for i, b in enumerate(blocks):
        bm.register(b, bytes([i]))
    bm.release(blocks, now=0.0)
    return pool, bm, blocks


def test_freed_block_is_zeroed_before_it_is_handed_out_again() -> None:
    pool, bm = make(2)
    blocks = bm.allocate(2)
    dirty(pool, blocks)
    bm.release(blocks, now=0.0)
    assert {bm.state(b) for b in blocks} == {BlockState.DIRTY}
    again = bm.allocate(1)  # no FREE block: the manager must zero the dirty ones first
    assert pool.is_zero(again[0])
    assert pool.zero_calls == 1
    assert bm.state(1 - again[0]) is BlockState.FREE
    assert pool.is_zero(1 - again[0])


def test_flush_batches_and_counts() -> None:
    pool, bm = make(4)
    blocks = bm.allocate(3)
    dirty(pool, blocks)
    bm.release(blocks, now=0.0)
    bm.flush()
    bm.flush()
    assert pool.zero_calls == 1
    assert bm.num_zeroed == 3
    assert all(pool.is_zero(b) for b in range(4))
    assert bm.num_free == 4


def test_exhaustion_and_double_free_raise() -> None:
    _, bm = make(2)
    blocks = bm.allocate(2)
    with pytest.raises(BlockPoolExhaustedError):
        bm.allocate(1)
    bm.release(blocks, now=0.0)
    with pytest.raises(BlockPoolExhaustedError):
        bm.release(blocks, now=0.0)


def test_cached_block_is_shared_then_parked_then_zeroed_on_expiry() -> None:
    pool, bm = make(4, cache=True)
    (b,) = bm.allocate(1)
    dirty(pool, [b])
    bm.register(b, b"h")
    assert bm.acquire_cached([b"h", b"missing"]) == [b]  # stops at the first miss
    assert bm.refcount(b) == 2
    bm.release([b], now=0.0)
    bm.release([b], now=1.0)
    assert bm.state(b) is BlockState.CACHED
    assert not pool.is_zero(b)
    assert bm.num_reusable == 4
    bm.expire(10.0)
    assert bm.state(b) is BlockState.CACHED
    bm.expire(11.0)
    bm.flush()
    assert bm.state(b) is BlockState.FREE
    assert pool.is_zero(b)
    assert bm.acquire_cached([b"h"]) == []


def test_allocation_evicts_cached_blocks_and_zeroes_them() -> None:
    pool, bm, blocks = released_cached(2)
    assert bm.num_free == 0
    assert bm.num_reusable == 2
    got = bm.allocate(2)
    assert sorted(got) == sorted(blocks)
    assert all(pool.is_zero(b) for b in got)
    assert bm.acquire_cached([b"\x00"]) == []


def test_drop_cache_zeroes_everything() -> None:
    pool, bm, blocks = released_cached(3)
    assert not any(pool.is_zero(b) for b in blocks)
    bm.drop_cache()
    bm.flush()
    assert all(pool.is_zero(b) for b in range(3))
    assert bm.num_free == 3


def test_cache_off_never_keeps_blocks() -> None:
    _pool, bm = make(2)
    (b,) = bm.allocate(1)
    bm.register(b, b"h")  # no-op without a cache
    assert bm.acquire_cached([b"h"]) == []
    bm.release([b], now=0.0)
    assert bm.state(b) is BlockState.DIRTY
