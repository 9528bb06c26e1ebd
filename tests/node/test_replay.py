"""Replay defences of the node: ohttp's one `ReplayStore` protocol, Date before replay (G3-G5).

The gateway checks the Date window first and only then remembers the `enc` until Date + window
(RFC 9458 §6.5), through `ohttp.replay.ReplayStore`: the in-memory `ReplayGuard`, or the Redis
store replicas share (tested against a real redis-server). Each refusal has its admitted twin.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from node.gateway import Gateway, Plain
from node.replay_redis import PREFIX, RedisReplayStore
from ohttp.replay import ReplayError, ReplayGuard, ReplayStore, ReplayStoreFullError
from tests.node.node_client import CHAT, inner, open_whole, seal
from tests.node.test_gateway import REQ, Clock, call, chat, make_gateway, model

if TYPE_CHECKING:
    from node.model_files import LoadedModel
    from ohttp.bhttp import Response
    from tests.redis_server import RedisServer

__all__ = ["model"]  # the module-scoped tiny model fixture, shared with test_gateway
WINDOW = 60.0


async def accepts(store: ReplayStore, enc: bytes, epoch: int = 0, until: float = 0.0) -> bool:
    try:
        await store.remember(enc, epoch=epoch, now=time.time(), until=until or time.time() + 60)
    except ReplayError:
        return False
    return True


def test_two_replicas_share_one_redis_store_g4(redis_server: RedisServer) -> None:
    async def go() -> None:
        a, b = RedisReplayStore.from_url(redis_server.url), RedisReplayStore.from_url(
            redis_server.url)
        enc = os.urandom(32)
        assert await accepts(a, enc)
        assert not await accepts(b, enc)  # the replay reaches the other replica: refused
        assert not await accepts(a, enc)
        assert await accepts(b, os.urandom(32))  # positive twin: a fresh enc is admitted
        assert await accepts(b, enc, epoch=1)  # another key epoch is another namespace
        await a.close()
        await b.close()
    asyncio.run(go())


def test_redis_entry_lives_exactly_until_its_deadline(redis_server: RedisServer) -> None:
    import redis.asyncio  # noqa: PLC0415

    async def go() -> None:
        store, probe = RedisReplayStore.from_url(redis_server.url), redis.asyncio.Redis.from_url(
            redis_server.url)
        enc, until = os.urandom(32), time.time() + 95.25
        assert await accepts(store, enc, epoch=3, until=until)
        key = PREFIX + b"3:" + hashlib.sha256(enc).digest()
        expires = await probe.execute_command("EXPIRETIME", key)
        assert expires == math.ceil(until)  # never shorter than asked
        assert not await accepts(store, enc, epoch=3, until=until + 10)
        gone = os.urandom(32)  # a deadline already past: Redis drops it at once, admitted again
        assert await accepts(store, gone, until=time.time() - 5)
        assert await accepts(store, gone, until=time.time() + 5)
        await store.close()
        await probe.aclose()
    asyncio.run(go())


def test_redis_down_fails_closed(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = RedisReplayStore.from_url(redis_server.url)
        assert await accepts(store, os.urandom(32))  # positive twin: up, admitted
        redis_server.kill()
        with pytest.raises(ReplayStoreFullError):
            await store.remember(os.urandom(32), epoch=0, now=0.0, until=time.time() + 60)
        await store.close()
    asyncio.run(go())


@dataclass
class Replicas:
    a: Gateway
    b: Gateway


def _status(response: Response) -> tuple[int, str]:
    doc = json.loads(response.content)
    return response.status, doc.get("type") or doc.get("error", {}).get("code", "")


async def _ask(gw: Gateway, body: bytes, ctx: object) -> tuple[int, str]:
    chunks = await call(gw, REQ, body)
    assert isinstance(chunks, list)
    response = open_whole(ctx, chunks[0])  # type: ignore[arg-type]
    return (200, "") if response.status == 200 else _status(response)


def test_replicas_behind_one_key_refuse_a_replay_through_redis_g4(
        model: LoadedModel, redis_server: RedisServer) -> None:
    a = make_gateway(model)
    b = make_gateway(model)
    b.keys = a.keys  # replicas behind one key
    a.replay, b.replay = (RedisReplayStore.from_url(redis_server.url),
                          RedisReplayStore.from_url(redis_server.url))

    async def go() -> None:
        try:
            body, ctx = seal(a.keys.current.key.config, inner(CHAT, chat("x")), chunked=False)
            assert await _ask(a, body, ctx) == (200, "")
            assert await _ask(b, body, ctx) == (400, "replayed_request")
            assert b.counts["submitted"] == 0  # the other replica's engine never saw it
            fresh, ctx = seal(a.keys.current.key.config, inner(CHAT, chat("x")), chunked=False)
            assert await _ask(b, fresh, ctx) == (200, "")  # positive twin
        finally:
            await b.engine.close()
            for store in (a.replay, b.replay):
                assert isinstance(store, RedisReplayStore)
                await store.close()
    run_gateway(a, go)


def run_gateway(gw: Gateway, test: object) -> None:
    from tests.node.test_gateway import run  # noqa: PLC0415

    run(gw, test)  # type: ignore[arg-type]


def test_date_is_checked_before_the_replay_store_g5(model: LoadedModel) -> None:
    clock = Clock()
    gw = make_gateway(model, clock)
    store = gw.replay
    assert isinstance(store, ReplayGuard)

    async def go() -> None:
        config = gw.keys.current.key.config
        late = clock.now + timedelta(seconds=WINDOW + 1)
        body, ctx = seal(config, inner(CHAT, chat("x"), date=late), chunked=False)
        for _ in range(2):  # out of window: the date problem each time, never "replayed"
            assert (await _ask(gw, body, ctx))[1].endswith("#date")
        assert len(store) == 0  # nothing remembered for a request the Date refused
        when = clock.now + timedelta(seconds=30)
        body, ctx = seal(config, inner(CHAT, chat("x"), date=when), chunked=False)
        assert await _ask(gw, body, ctx) == (200, "")  # positive twin: admitted, remembered
        assert len(store) == 1
        assert await _ask(gw, body, ctx) == (400, "replayed_request")
        assert gw.engine.stats().completed == 1
    run_gateway(gw, go)


def test_enc_is_remembered_until_date_plus_window(model: LoadedModel) -> None:
    clock = Clock()
    gw = make_gateway(model, clock)
    store = gw.replay
    assert isinstance(store, ReplayGuard)

    async def go() -> None:
        when = clock.now - timedelta(seconds=20)
        body, ctx = seal(gw.keys.current.key.config, inner(CHAT, chat("x"), date=when),
                         chunked=False)
        assert await _ask(gw, body, ctx) == (200, "")
        deadline = (when + timedelta(seconds=WINDOW)).timestamp()
        assert_live_until(store, body, gw.keys.current.serial, deadline)
    run_gateway(gw, go)


def assert_live_until(store: ReplayGuard, body: bytes, epoch: int, deadline: float) -> None:
    """The request's enc is refused at `deadline` and forgotten just after it."""
    enc = body[7:39]  # after the 7-byte header: X25519's 32-byte enc (RFC 9458 §4.3)
    with pytest.raises(ReplayError):
        store.check_and_record(enc, epoch=epoch, now=deadline)
    store.check_and_record(enc, epoch=epoch, now=deadline + 0.001)  # twin: gone after it


def test_missing_date_refused_by_default_g5(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        config = gw.keys.current.key.config
        body, ctx = seal(config, inner(CHAT, chat("x"), with_date=False),
                         chunked=False)
        assert (await _ask(gw, body, ctx))[1].endswith("#date")
        body, ctx = seal(config, inner(CHAT, chat("x")), chunked=False)
        assert await _ask(gw, body, ctx) == (200, "")  # positive twin: with a Date
    run_gateway(gw, go)


def test_missing_date_accepted_when_not_required(model: LoadedModel) -> None:
    clock = Clock()
    gw = make_gateway(model, clock, require_date=False)
    store = gw.replay
    assert isinstance(store, ReplayGuard)

    async def go() -> None:
        body, ctx = seal(gw.keys.current.key.config, inner(CHAT, chat("x"), with_date=False),
                         chunked=False)
        assert await _ask(gw, body, ctx) == (200, "")
        assert await _ask(gw, body, ctx) == (400, "replayed_request")
        assert_live_until(store, body, gw.keys.current.serial,
                          clock.now.timestamp() + 2 * WINDOW)
    run_gateway(gw, go)


def test_plain_answers_never_reach_the_store(model: LoadedModel) -> None:
    gw = make_gateway(model)
    store = gw.replay
    assert isinstance(store, ReplayGuard)

    async def go() -> None:
        body, _ = seal(gw.keys.current.key.config, inner(CHAT, chat("x")), chunked=False)
        assert isinstance(await call(gw, REQ, body[:-1]), Plain)  # does not open: plain 400
        assert len(store) == 0
    run_gateway(gw, go)
