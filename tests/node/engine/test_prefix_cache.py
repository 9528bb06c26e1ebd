"""Prefix hash chain and cache index: salted chains, TTL, LRU, eviction returns blocks to zero."""

from __future__ import annotations

import hashlib
import struct

import pytest

from hushcc.errors import ConfigError
from node.engine.prefix_cache import DOMAIN, PrefixCache, chain_next, chain_root, extend_chain

SALT_A = b"A" * 16
SALT_B = b"B" * 16


def test_chain_is_the_documented_construction() -> None:
    root = hashlib.blake2b(DOMAIN + SALT_A, digest_size=32).digest()
    assert chain_root(SALT_A) == root
    h1 = hashlib.blake2b(root + struct.pack("<2I", 1, 70000), digest_size=32).digest()
    assert chain_next(root, [1, 70000]) == h1


def test_same_tokens_different_salt_never_collide_but_same_salt_does() -> None:
    tokens = list(range(12))
    a: list[bytes] = []
    a2: list[bytes] = []
    b: list[bytes] = []
    extend_chain(chain_root(SALT_A), a, tokens, 4, len(tokens))
    extend_chain(chain_root(SALT_A), a2, tokens, 4, len(tokens))
    extend_chain(chain_root(SALT_B), b, tokens, 4, len(tokens))
    assert a == a2
    assert len(a) == 3
    assert not set(a) & set(b)


def test_chain_covers_only_full_blocks_and_depends_on_every_earlier_token() -> None:
    hashes: list[bytes] = []
    extend_chain(chain_root(SALT_A), hashes, list(range(11)), 4, 11)
    assert len(hashes) == 2
    other: list[bytes] = []
    extend_chain(chain_root(SALT_A), other, [99, *range(1, 11)], 4, 11)
    assert hashes[1] != other[1]  # block 1 is identical, block 0 differs: chained


@pytest.mark.parametrize("salt", [b"", b"short", "A" * 16], ids=["empty", "short", "str"])
def test_bad_salts_rejected(salt: object) -> None:
    with pytest.raises(ConfigError):
        chain_root(salt)  # type: ignore[arg-type]


def test_ttl_and_lru() -> None:
    c = PrefixCache(ttl=10.0)
    assert c.register(1, b"h1")
    assert c.register(2, b"h2")
    assert c.register(3, b"h3")
    assert not c.register(4, b"h1")  # hash already indexed
    c.park(2, now=0.0)
    c.park(1, now=5.0)
    assert c.expire(9.0) == []
    assert c.expire(10.0) == [2]
    assert c.lookup(b"h2") is None
    assert c.lookup(b"h1") == 1
    c.park(3, now=6.0)
    c.unpark(1)  # a hit takes it back into use
    assert c.evict_lru(5) == [3]
    assert c.lookup(b"h1") == 1
    assert len(c) == 1
    with pytest.raises(ConfigError):
        PrefixCache(ttl=0)
