"""Replay stores: the Redis one shared by replicas against a real redis-server (G3, G4)."""

from __future__ import annotations

import asyncio
import os

import pytest

from node.replay_store import MemoryReplayStore, RedisReplayStore, ReplayStore
from ohttp.replay import ReplayError, ReplayLimits, ReplayStoreFullError
from tests.redis_server import RedisServer


async def accepts(store: ReplayStore, enc: bytes, epoch: int = 0) -> bool:
    try:
        await store.check_and_record(enc, epoch=epoch, now=0.0)
    except ReplayError:
        return False
    return True


def test_two_replicas_share_one_redis_store_g4(redis_server: RedisServer) -> None:
    async def go() -> None:
        a = RedisReplayStore.from_url(redis_server.url, window=60)
        b = RedisReplayStore.from_url(redis_server.url, window=60)
        enc = os.urandom(32)
        assert await accepts(a, enc)
        assert not await accepts(b, enc)  # the replay reaches the other replica: refused
        assert not await accepts(a, enc)
        assert await accepts(b, os.urandom(32))  # positive twin: a fresh enc is admitted
        assert await accepts(b, enc, epoch=1)  # another key epoch is another namespace
        await a.close()
        await b.close()
    asyncio.run(go())


def test_redis_entries_expire_after_the_window(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = RedisReplayStore.from_url(redis_server.url, window=0.2)
        enc = os.urandom(32)
        assert await accepts(store, enc)
        assert not await accepts(store, enc)
        await asyncio.sleep(0.4)
        assert await accepts(store, enc)
        await store.close()
    asyncio.run(go())


def test_redis_down_fails_closed(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = RedisReplayStore.from_url(redis_server.url, window=60)
        assert await accepts(store, os.urandom(32))
        redis_server.kill()
        with pytest.raises(ReplayStoreFullError):
            await store.check_and_record(os.urandom(32), epoch=0, now=0.0)
        await store.close()
    asyncio.run(go())


def test_memory_store_refuses_replay_and_fails_closed_when_full() -> None:
    async def go() -> None:
        store = MemoryReplayStore(ReplayLimits(window=60, max_entries=2))
        enc = os.urandom(32)
        assert await accepts(store, enc)
        assert not await accepts(store, enc)
        assert await accepts(store, os.urandom(32))
        with pytest.raises(ReplayStoreFullError):
            await store.check_and_record(os.urandom(32), epoch=0, now=1.0)
    asyncio.run(go())
