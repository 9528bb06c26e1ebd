"""Paged KV block bookkeeping: free list, refcounts, prefix-cache sharing, zero-on-free.

Pure Python (no torch): the KV pool itself lives in the model runner; this module only decides
which block ids are free, owned or cached, and calls the injected `zero_blocks` function (the
runner's, or a fake pool's in tests) to erase them.

Block states (every block is in exactly one):
* FREE      refcount 0, zeroed, in `_free`: the only blocks `allocate` hands out.
* DIRTY     refcount 0, freed but not yet zeroed, in `_dirty`: never handed out; `flush` zeroes
            every dirty block in one batched call and moves them to FREE.
* IN_USE    refcount >= 1, in the block tables of that many live sequences (several only through
            prefix-cache sharing, hence only sequences of one tenant: the hash chain is salted).
* CACHED    refcount 0, indexed in the prefix cache with an expiry time; it keeps its tenant's KV
            until a hit takes it back IN_USE, or TTL expiry / LRU eviction / flush moves it to
            DIRTY (and so it is zeroed before reuse).

Invariants: refcounts >= 0; a freed block is never reallocated before it has been zeroed; with the
cache off, a block freed by the last sequence using it goes straight to DIRTY.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError, HushError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from node.engine.prefix_cache import PrefixCache


class BlockState(enum.Enum):
    """State of one KV block (see the module docstring)."""

    FREE = "free"
    DIRTY = "dirty"
    IN_USE = "in_use"
    CACHED = "cached"


class BlockPoolExhaustedError(HushError):
    """The pool has fewer reusable blocks than asked for (a scheduler accounting bug)."""


class BlockManager:
    """Allocate, share, release and erase KV blocks of a fixed pool."""

    __slots__ = ("_dirty", "_free", "_refcount", "_zero_blocks", "block_size", "cache",
                 "num_blocks", "num_zeroed")

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        zero_blocks: Callable[[Sequence[int]], None],
        cache: PrefixCache | None = None,
    ) -> None:
        """Create a manager over `num_blocks` blocks, all FREE (the pool is allocated zeroed).

        Args:
            num_blocks: blocks in the pool.
            block_size: tokens per block.
            zero_blocks: erases the given blocks in one batched operation.
            cache: the prefix cache, or None to disable prefix reuse.

        Raises:
            ConfigError: a size is not positive.
        """
        if num_blocks < 1 or block_size < 1:
            raise ConfigError("block pool sizes must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.cache = cache
        self.num_zeroed = 0
        self._zero_blocks = zero_blocks
        self._refcount = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._dirty: list[int] = []

    def refcount(self, block: int) -> int:
        """Number of live sequences whose block table holds `block`."""
        return self._refcount[block]

    def state(self, block: int) -> BlockState:
        """The block's state (linear in the free/dirty lists: for tests and audits)."""
        if self._refcount[block] > 0:
            return BlockState.IN_USE
        if self.cache is not None and self.cache.is_parked(block):
            return BlockState.CACHED
        if block in self._dirty:
            return BlockState.DIRTY
        return BlockState.FREE

    @property
    def num_free(self) -> int:
        """Blocks in FREE state."""
        return len(self._free)

    @property
    def num_reusable(self) -> int:
        """Blocks that `allocate` can hand out (FREE, DIRTY and CACHED)."""
        parked = self.cache.num_parked if self.cache is not None else 0
        return len(self._free) + len(self._dirty) + parked

    def allocate(self, n: int) -> list[int]:
        """Hand out `n` zeroed blocks with refcount 1, zeroing dirty or evicting cached ones first.

        Raises:
            BlockPoolExhaustedError: fewer than `n` blocks are reusable.
        """
        if n > self.num_reusable:
            raise BlockPoolExhaustedError("KV block pool exhausted")
        if len(self._free) < n:
            if self.cache is not None and len(self._free) + len(self._dirty) < n:
                self._dirty.extend(self.cache.evict_lru(n - len(self._free) - len(self._dirty)))
            self.flush()
        out = [self._free.popleft() for _ in range(n)]
        for b in out:
            self._refcount[b] = 1
        return out

    def acquire_cached(self, hashes: Iterable[bytes]) -> list[int]:
        """Take the longest run of leading blocks whose hashes are indexed (refcount + 1 each)."""
        if self.cache is None:
            return []
        out: list[int] = []
        for h in hashes:
            b = self.cache.lookup(h)
            if b is None:
                break
            self.cache.unpark(b)
            self._refcount[b] += 1
            out.append(b)
        self.cache.hits += len(out)
        return out

    def register(self, block: int, block_hash: bytes) -> None:
        """Offer a computed full IN_USE block to the prefix cache (no-op when it is off)."""
        if self.cache is not None and self._refcount[block] > 0:
            self.cache.register(block, block_hash)

    def release(self, blocks: Sequence[int], now: float) -> None:
        """Drop one reference to each block, tail first; unreferenced blocks go CACHED or DIRTY.

        Raises:
            BlockPoolExhaustedError: a block was not referenced (a double free).
        """
        for b in reversed(blocks):
            if self._refcount[b] < 1:
                raise BlockPoolExhaustedError("release of an unreferenced block")
            self._refcount[b] -= 1
            if self._refcount[b] == 0 and not (
                self.cache is not None and self.cache.park(b, now)
            ):
                self._dirty.append(b)

    def expire(self, now: float) -> None:
        """Move CACHED blocks whose TTL has passed to DIRTY (zeroed by the next `flush`)."""
        if self.cache is not None:
            self._dirty.extend(self.cache.expire(now))

    def drop_cache(self) -> None:
        """Move every CACHED block to DIRTY (flush the prefix cache)."""
        if self.cache is not None:
            self._dirty.extend(self.cache.clear_parked())

    def flush(self) -> None:
        """Zero every DIRTY block in one batched call and make it FREE."""
        if not self._dirty:
            return
        dirty = self._dirty
        self._zero_blocks(dirty)  # if this raises, the blocks stay DIRTY (never handed out)
        self._dirty = []
        self.num_zeroed += len(dirty)
        self._free.extend(dirty)
