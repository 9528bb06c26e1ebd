"""Token redemption and the spent-token stores: T4, T5 (memory and Redis), fail closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from relay.guard import TokenBucket
from relay.issuer_keys import PinnedKey
from relay.privacypass import TokenChallenge
from relay.redemption import Redeemer, TokenRejectedError, relay_challenge
from relay.spent import KEY_PREFIX, MemorySpentStore, RedisSpentStore, SpentStoreUnavailableError
from tests.redis_server import RedisServer
from tests.relay.relay_helpers import (
    ISSUER_NAME,
    ORIGIN_NAME,
    IssuerFiles,
    authorization,
    make_issuer,
    mint,
)

CHALLENGE = relay_challenge(ISSUER_NAME, ORIGIN_NAME)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> IssuerFiles:
    return make_issuer(tmp_path_factory.mktemp("issuer"))


def test_double_spend_refused_and_fresh_token_admitted_t5(issuer: IssuerFiles) -> None:
    redeemer = Redeemer(issuer.pinned, CHALLENGE, MemorySpentStore())
    token = authorization(mint(issuer))

    async def run() -> None:
        await redeemer.redeem(token)
        with pytest.raises(TokenRejectedError):
            await redeemer.redeem(token)
        await redeemer.redeem(authorization(mint(issuer)))  # positive twin

    asyncio.run(run())


def test_only_the_pinned_key_and_the_relay_challenge_are_accepted_t4(
        issuer: IssuerFiles, tmp_path: Path) -> None:
    other = make_issuer(tmp_path, "other.key")
    redeemer = Redeemer(issuer.pinned, CHALLENGE, MemorySpentStore())
    wrong_origin = TokenChallenge(2, ISSUER_NAME, b"", "elsewhere.test")
    bad = [None, "", "Bearer x", "PrivateToken token=AAAA", authorization(mint(other)),
           authorization(mint(issuer, wrong_origin))]

    async def run() -> None:
        for header in bad:
            with pytest.raises(TokenRejectedError, match=r"^token required$"):
                await redeemer.redeem(header)
        await redeemer.redeem(authorization(mint(issuer)))

    asyncio.run(run())


def test_tokens_outside_the_key_epoch_are_refused(issuer: IssuerFiles) -> None:
    pinned = issuer.pinned
    now = [float(pinned.not_after)]
    redeemer = Redeemer(pinned, CHALLENGE, MemorySpentStore(), clock=lambda: now[0])
    token = authorization(mint(issuer))
    with pytest.raises(TokenRejectedError):
        asyncio.run(redeemer.redeem(token))
    now[0] = pinned.not_before - 1.0
    with pytest.raises(TokenRejectedError):
        asyncio.run(redeemer.redeem(token))
    now[0] = pinned.not_after - 1.0
    asyncio.run(redeemer.redeem(token))


def test_memory_store_expires_entries_and_stays_bounded() -> None:
    now = [0.0]
    store = MemorySpentStore(clock=lambda: now[0])

    async def run() -> None:
        assert await store.spend(b"a", 10.0)
        assert not await store.spend(b"a", 10.0)
        now[0] = 10.0
        assert await store.spend(b"a", 20.0)  # expired with its epoch
        for i in range(3000):
            await store.spend(i.to_bytes(4, "big"), 11.0)
        now[0] = 12.0
        for i in range(1100):
            await store.spend(b"n" + i.to_bytes(4, "big"), 100.0)
        assert len(store) < 2500  # the expired epoch was pruned

    asyncio.run(run())


def test_redis_store_is_shared_expires_with_the_epoch_and_fails_closed(
        redis_server: RedisServer, issuer: IssuerFiles) -> None:
    pinned: PinnedKey = issuer.pinned

    async def run() -> None:
        one, two = RedisSpentStore(redis_server.url), RedisSpentStore(redis_server.url)
        try:
            r1, r2 = (Redeemer(pinned, CHALLENGE, s) for s in (one, two))
            token = authorization(mint(issuer))
            await r1.redeem(token)
            with pytest.raises(TokenRejectedError):
                await r2.redeem(token)  # spent at the other relay
            await r2.redeem(authorization(mint(issuer)))  # positive twin
        finally:
            await one.close()
            await two.close()

    asyncio.run(run())
    client = redis.Redis.from_url(redis_server.url)
    keys: list[bytes] = client.keys(KEY_PREFIX + b"*")  # type: ignore[assignment]
    assert len(keys) == 2
    for key in keys:
        assert abs(client.expiretime(key.decode()) - pinned.not_after) <= 1
    client.close()
    redis_server.kill()

    async def after_kill() -> None:
        store = RedisSpentStore(redis_server.url)
        try:
            with pytest.raises(SpentStoreUnavailableError):
                await Redeemer(pinned, CHALLENGE, store).redeem(authorization(mint(issuer)))
        finally:
            await store.close()

    started = time.monotonic()
    asyncio.run(after_kill())
    assert time.monotonic() - started < 5


def test_token_bucket_rate_and_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0
    assert bucket.take() > 0
