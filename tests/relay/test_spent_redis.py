"""RedisSpentStore's pipelined RESP connection: against a real redis-server, and a misbehaving one.

T5 (double spend across many concurrent redemptions on one connection) and fail-closed: a server
that answers garbage, an error, an extra reply or nothing makes `spend` raise
`SpentStoreUnavailableError` (never True), drops the connection, and the next call reconnects.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
import redis

from relay.spent import KEY_PREFIX, RedisSpentStore, SpentStoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.redis_server import RedisServer

EXPIRES = time.time() + 3600


def test_concurrent_spends_share_one_connection_and_each_id_wins_once_t5(
        redis_server: RedisServer) -> None:
    async def run() -> list[bool]:
        store = RedisSpentStore(redis_server.url)
        try:
            ids = [i.to_bytes(32, "big") for i in range(150)]
            return list(await asyncio.gather(*(store.spend(i, EXPIRES) for i in ids + ids)))
        finally:
            await store.close()

    outcome = asyncio.run(run())
    assert outcome[:150] == [True] * 150  # first spends, in order of issue
    assert outcome[150:] == [False] * 150  # the same ids again: double spends
    client = redis.Redis.from_url(redis_server.url)
    assert len(client.keys(KEY_PREFIX + b"*")) == 150
    assert client.info("stats")["total_connections_received"] == 2  # the store's, and this one
    client.close()


def test_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", "s3cret")
    base = redis_server.url.removesuffix("/0").replace("redis://", "redis://:{}@")

    async def spend(url: str) -> bool:
        store = RedisSpentStore(url)
        try:
            return await store.spend(b"\x01" * 32, EXPIRES)
        finally:
            await store.close()

    with pytest.raises(SpentStoreUnavailableError):
        asyncio.run(spend(base.format("wrong") + "/2"))
    with pytest.raises(SpentStoreUnavailableError):
        asyncio.run(spend(redis_server.url))  # NOAUTH: fail closed
    assert asyncio.run(spend(base.format("s3cret") + "/2")) is True  # positive twin
    admin.close()
    authed = redis.Redis.from_url(base.format("s3cret") + "/2")
    assert authed.exists(KEY_PREFIX + (b"\x01" * 32).hex().encode()) == 1
    authed.close()




async def _misbehaving(answer_set: Callable[[int], bytes | None]) -> tuple[asyncio.Server, str]:
    """A loopback server that answers PING properly and the n-th SET with `answer_set(n)`."""
    sets = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                out = b"+PONG\r\n" * data.count(b"\r\nPING\r\n")
                for _ in range(data.count(b"\r\nSET\r\n")):
                    sets[0] += 1
                    out += answer_set(sets[0]) or b""
                writer.write(out)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize(("name", "first_answer"), [
    ("garbage", b"*1\r\n+OK\r\n"),
    ("error reply", b"-READONLY You can't write against a read only replica.\r\n"),
    ("integer reply", b":1\r\n"),
    ("extra reply", b"+OK\r\n+OK\r\n"),
    ("silence", None),
])
def test_a_misbehaving_server_fails_closed_and_the_next_call_reconnects(
        name: str, first_answer: bytes | None) -> None:
    async def run() -> tuple[list[object], float]:
        server, url = await _misbehaving(lambda n: first_answer if n == 1 else b"+OK\r\n")
        store = RedisSpentStore(url, timeout=0.3)
        outcomes: list[object] = []
        try:
            started = time.monotonic()
            for token in (b"a" * 32, b"b" * 32):
                try:
                    outcomes.append(await store.spend(token, EXPIRES))
                except SpentStoreUnavailableError:
                    outcomes.append("unavailable")
            elapsed = time.monotonic() - started
        finally:
            await store.close()
            server.close()
            await server.wait_closed()
        return outcomes, elapsed

    outcomes, elapsed = asyncio.run(run())
    if name == "extra reply":  # the first SET got its own +OK; the stray one kills the stream
        assert outcomes[0] is True
    else:
        assert outcomes[0] == "unavailable", name
    assert outcomes[1] is True  # positive twin: a fresh connection, a proper answer
    assert elapsed < 2


def test_an_unreachable_server_fails_closed_fast() -> None:
    async def run() -> None:
        server, url = await _misbehaving(lambda _n: b"+OK\r\n")
        server.close()
        await server.wait_closed()
        store = RedisSpentStore(url, timeout=0.3)
        try:
            with pytest.raises(SpentStoreUnavailableError):
                await store.spend(b"c" * 32, EXPIRES)
        finally:
            await store.close()

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 2
