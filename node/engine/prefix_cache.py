"""Tenant-salted prefix cache: chained block hashes and the index of reusable KV blocks.

Pure Python (no torch, no clock, no I/O): time is the `now` argument of every method that needs it.

Hash chain (the seed's "prefix caching & stateless computation"):
    h_0 = BLAKE2b-256(DOMAIN ‖ salt)
    h_i = BLAKE2b-256(h_{i-1} ‖ uint32le(token) for each token of full block i)
The salt is the server-derived tenant salt (an argument of `Engine.submit`, never read from the
request plaintext), so two tenants' chains differ from block 0 on and tenant B can never look up a
block that tenant A computed. Only *full* blocks are hashed and cached.

Invariants:
* `_by_hash` and `_hash_of` are inverse maps; a block is in the index at most once.
* `_parked` holds exactly the indexed blocks whose refcount is 0 (CACHED state, see blocks.py),
  in least-recently-released order, each with its expiry time (release time + TTL).
* Blocks leave the index only through `expire`, `evict_lru`, `drop` or `clear`, which return them
  so that the block manager zeroes them before they can be handed out again.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

DOMAIN = b"hushcc/engine/prefix/v1\x00"
MIN_SALT_LEN = 16


def chain_root(salt: bytes) -> bytes:
    """Return h_0, the root of a tenant's hash chain.

    Args:
        salt: the server-derived tenant salt (at least 16 bytes).

    Returns:
        The 32-byte root hash.

    Raises:
        ConfigError: the salt is not bytes or is shorter than 16 bytes.
    """
    if not isinstance(salt, bytes) or len(salt) < MIN_SALT_LEN:
        raise ConfigError("tenant salt must be at least 16 bytes")
    return hashlib.blake2b(DOMAIN + salt, digest_size=32).digest()


def chain_next(prev: bytes, block_tokens: Sequence[int]) -> bytes:
    """Return h_i from h_{i-1} and the token ids of full block i."""
    body = struct.pack(f"<{len(block_tokens)}I", *block_tokens)
    return hashlib.blake2b(prev + body, digest_size=32).digest()


def extend_chain(
    root: bytes, hashes: list[bytes], token_ids: Sequence[int], block_size: int, upto: int
) -> None:
    """Append to `hashes` the chained hashes of every full block within the first `upto` tokens."""
    while (len(hashes) + 1) * block_size <= upto:
        i = len(hashes)
        prev = hashes[-1] if hashes else root
        hashes.append(chain_next(prev, token_ids[i * block_size : (i + 1) * block_size]))


class PrefixCache:
    """Index from chained block hash to physical block, with TTL and LRU eviction of idle blocks."""

    __slots__ = ("_by_hash", "_hash_of", "_parked", "hits", "ttl")

    def __init__(self, ttl: float) -> None:
        """Create an empty cache whose idle blocks expire `ttl` seconds after their last release.

        Raises:
            ConfigError: `ttl` is not positive.
        """
        if not ttl > 0:
            raise ConfigError("prefix cache TTL must be positive")
        self.ttl = ttl
        self.hits = 0
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}
        self._parked: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        """Number of indexed blocks (in use or parked)."""
        return len(self._hash_of)

    @property
    def num_parked(self) -> int:
        """Indexed blocks with refcount 0 (evictable)."""
        return len(self._parked)

    def next_expiry(self) -> float | None:
        """Earliest expiry time of an idle block, or None when none is parked."""
        return min(self._parked.values(), default=None)

    def lookup(self, block_hash: bytes) -> int | None:
        """Return the block holding `block_hash`, or None."""
        return self._by_hash.get(block_hash)

    def is_indexed(self, block: int) -> bool:
        """True when `block` is in the index."""
        return block in self._hash_of

    def is_parked(self, block: int) -> bool:
        """True when `block` is indexed and idle (refcount 0)."""
        return block in self._parked

    def register(self, block: int, block_hash: bytes) -> bool:
        """Index a freshly computed full block; False when the hash or block is already indexed."""
        if block_hash in self._by_hash or block in self._hash_of:
            return False
        self._by_hash[block_hash] = block
        self._hash_of[block] = block_hash
        return True

    def park(self, block: int, now: float) -> bool:
        """Mark an indexed block idle (its refcount reached 0); False when it is not indexed."""
        if block not in self._hash_of:
            return False
        self._parked[block] = now + self.ttl
        self._parked.move_to_end(block)
        return True

    def unpark(self, block: int) -> None:
        """Take an idle block back into use (a hit)."""
        self._parked.pop(block, None)

    def expire(self, now: float) -> list[int]:
        """Remove and return the idle blocks whose TTL has passed."""
        gone = [b for b, deadline in self._parked.items() if deadline <= now]
        for b in gone:
            self.drop(b)
        return gone

    def evict_lru(self, n: int) -> list[int]:
        """Remove and return up to `n` idle blocks, least recently released first."""
        gone = list(self._parked)[:n]
        for b in gone:
            self.drop(b)
        return gone

    def drop(self, block: int) -> None:
        """Remove `block` from the index (its contents must then be zeroed by the caller)."""
        self._parked.pop(block, None)
        h = self._hash_of.pop(block, None)
        if h is not None:
            del self._by_hash[h]

    def clear_parked(self) -> list[int]:
        """Remove and return every idle block (flush)."""
        return self.evict_lru(len(self._parked))
