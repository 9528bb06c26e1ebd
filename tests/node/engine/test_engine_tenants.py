"""E3 at the engine: prefix reuse never crosses tenants, and does work within one (paired)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from hushcc.errors import ConfigError
from node.engine.engine import GenerateRequest
from tests.node.engine.engine_helpers import (
    SALT_A,
    SALT_B,
    collect,
    make_engine,
    reference_greedy,
    req,
    tokens_of,
)

PROMPT = list(range(40, 77))  # 37 tokens: 9 full blocks of 4 are cacheable


def test_tenants_are_isolated_in_both_directions_and_reuse_their_own() -> None:
    ref = reference_greedy(PROMPT, 6)

    async def go() -> None:
        eng = make_engine()

        async def run(salt: bytes) -> int:
            before = eng.stats().cache_hit_blocks
            out = tokens_of(await collect(eng.submit(req(PROMPT, max_tokens=6), salt)))
            assert out == ref  # a hit never changes the output
            return eng.stats().cache_hit_blocks - before

        assert await run(SALT_A) == 0  # A primes
        assert await run(SALT_B) == 0  # B gets nothing of A's prefix (and primes its own)
        assert await run(SALT_A) == 9  # positive twin: A reuses its own blocks
        assert await run(SALT_B) == 9  # ... and so does B, not A's
        await eng.close()
    asyncio.run(go())


def test_cache_off_never_hits() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        for _ in range(2):
            await collect(eng.submit(req(PROMPT, max_tokens=2), SALT_A))
        assert eng.stats().cache_hit_blocks == 0
        await eng.close()
    asyncio.run(go())


def test_salt_is_a_server_argument_not_part_of_the_request() -> None:
    assert [f.name for f in dataclasses.fields(GenerateRequest)] == ["prompt_token_ids", "params"]
    eng = make_engine()
    with pytest.raises(ConfigError):
        eng.submit(req(PROMPT), b"short")
    assert eng.idle
