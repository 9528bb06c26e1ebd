"""The project's one Redis set (relay spent tokens, node replay store): the adds of one loop tick
in one redis-py pipeline, against a real redis-server. First writer wins (T5, G4: each key is new
once however many adds share a pipeline) and fail-closed (an error reply or a dead server fails
every add of the batch, none is reported new), each with its positive twin.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import redis

from hushcc.shared_set import RedisFirstWriterSet, SharedSetUnavailableError

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

EXPIRES = time.time() + 3600
PREFIX = b"test:set:"


class CountingSet(RedisFirstWriterSet):
    """Records the size of every round trip."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=0.5)
        self.round_trips: list[int] = []

    async def _set_all(self, keys: list[tuple[bytes, int]]) -> list[bool]:
        self.round_trips.append(len(keys))
        return await super()._set_all(keys)


async def _add_all(store: RedisFirstWriterSet, ids: list[bytes]) -> list[object]:
    async def one(key: bytes) -> object:
        try:
            return await store.add(PREFIX + key, EXPIRES)
        except SharedSetUnavailableError:
            return "unavailable"
    return list(await asyncio.gather(*(one(i) for i in ids)))


def test_one_ticks_adds_share_a_round_trip_and_each_key_wins_once_t5(
        redis_server: RedisServer) -> None:
    ids = [i.to_bytes(32, "big") for i in range(150)]

    async def run() -> tuple[list[object], list[bool], list[int]]:
        store = CountingSet(redis_server.url)
        try:
            together = await _add_all(store, ids + ids)  # the second 150: repeats
            alone = [await store.add(PREFIX + b"\xff" * 32, EXPIRES)]  # twin: a lone one, plain
            alone.append(await store.add(PREFIX + b"\xff" * 32, EXPIRES))
            return together, alone, store.round_trips
        finally:
            await store.close()

    together, alone, round_trips = asyncio.run(run())
    assert together == [True] * 150 + [False] * 150
    assert alone == [True, False]
    assert round_trips == [300, 1, 1]
    client = redis.Redis.from_url(redis_server.url)
    assert len(client.keys(PREFIX + b"*")) == 151
    client.close()


def test_an_error_reply_fails_the_whole_batch_closed(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("min-replicas-to-write", 1)  # every write now answers -NOREPLICAS

    async def run(ids: list[bytes]) -> list[object]:
        store = RedisFirstWriterSet(redis_server.url, timeout=0.5)
        try:
            return await _add_all(store, ids)
        finally:
            await store.close()

    try:
        refused = asyncio.run(run([bytes([i]) * 32 for i in range(20)]))
    finally:
        admin.config_set("min-replicas-to-write", 0)
    assert refused == ["unavailable"] * 20
    assert admin.keys(PREFIX + b"*") == []
    assert asyncio.run(run([bytes([i]) * 32 for i in range(20)])) == [True] * 20  # twin
    admin.close()


def test_a_dead_server_fails_a_batch_closed_and_fast(redis_server: RedisServer) -> None:
    async def run() -> list[object]:
        store = RedisFirstWriterSet(redis_server.url, timeout=0.5)
        try:
            assert await store.add(PREFIX + b"\x01" * 32, EXPIRES) is True  # twin: it records
            redis_server.kill()
            return await _add_all(store, [bytes([i]) * 32 for i in range(2, 22)])
        finally:
            await store.close()

    started = time.monotonic()
    assert asyncio.run(run()) == ["unavailable"] * 20
    assert time.monotonic() - started < 5


def test_a_cancelled_add_leaves_the_others_answered(redis_server: RedisServer) -> None:
    async def run() -> tuple[list[bool | BaseException], bool]:
        store = RedisFirstWriterSet(redis_server.url, timeout=0.5)
        try:
            tasks = [asyncio.ensure_future(store.add(PREFIX + bytes([i]) * 32, EXPIRES))
                     for i in range(10)]
            await asyncio.sleep(0)  # every add is waiting in this tick's batch
            tasks[3].cancel()  # a client gone while its SET is on the way
            done = await asyncio.gather(*tasks, return_exceptions=True)
            again = await store.add(PREFIX + bytes([3]) * 32, EXPIRES)
            return done, again
        finally:
            await store.close()

    done, again = asyncio.run(run())
    assert isinstance(done[3], asyncio.CancelledError)
    assert [d for i, d in enumerate(done) if i != 3] == [True] * 9
    assert again is False  # the cancelled one's SET went out: its key is taken, never reusable
