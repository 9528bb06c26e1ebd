"""The pure gateway handler, in process: routes, error placement, replay, padding, rotation."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from node.engine.engine import Engine, EngineConfig
from node.engine.runner import PagedRunner
from node.engine.sequence import EngineLimits
from node.gateway import Gateway, GatewayConfig, Plain, Sealed, ServedModel
from node.keys import KeyRing, RotationPolicy
from node.model_files import LoadedModel, tiny_model
from node.openai_api import ApiLimits
from ohttp.encapsulation import encapsulate_request
from ohttp.replay import ReplayGuard
from tests.node.node_client import CHAT, COMPLETIONS, inner, open_stream, open_whole, seal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

REQ = "message/ohttp-req"
CREQ = "message/ohttp-chunked-req"


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)  # clients stamp Date with real time

    def __call__(self) -> datetime:
        return self.now


def make_gateway(model: LoadedModel, clock: Clock | None = None, num_blocks: int = 128,
                 **config: object) -> Gateway:
    clock = clock or Clock()
    runner = PagedRunner(model.weights, num_blocks=num_blocks, block_size=4)
    engine = Engine(runner, model.tokenizer, EngineConfig(
        limits=EngineLimits(max_model_len=512, max_tokens_cap=64, max_num_seqs=32,
                            max_num_batched_tokens=512),
        eos_token_ids=model.eos_token_ids, vocab_size=model.weights.config.vocab_size))
    keys = KeyRing(RotationPolicy(timedelta(hours=1), timedelta(minutes=5)), now=clock.now,
                   rng=os.urandom)
    return Gateway(keys=keys, engine=engine, model=ServedModel(model.name, model.tokenizer),
                   replay=ReplayGuard(), clock=clock, rng=os.urandom,
                   salt_key=os.urandom(32), config=GatewayConfig(**config))  # type: ignore[arg-type]


def run(gateway: Gateway, test: Callable[[], Awaitable[None]]) -> None:
    async def go() -> None:
        try:
            await test()
        finally:
            await gateway.engine.close()
    asyncio.run(go())


async def call(gateway: Gateway, media: str, body: bytes) -> Plain | list[bytes]:
    answer = await gateway.handle(media, body)
    if isinstance(answer, Plain):
        return answer
    assert isinstance(answer, Sealed)
    return [c async for c in answer.chunks]


def chat(content: str, **kw: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 6,
            "temperature": 0, **kw}


def test_chat_completion_non_streaming(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        body, ctx = seal(gw.keys.current.key.config, inner(CHAT, chat("hello")), chunked=False)
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)
        assert len(chunks) == 1
        response = open_whole(ctx, chunks[0])
        assert response.status == 200
        doc = json.loads(response.content)
        assert doc["object"] == "chat.completion"
        assert doc["usage"]["completion_tokens"] == 6
        assert doc["choices"][0]["finish_reason"] == "length"
        assert doc["choices"][0]["message"]["role"] == "assistant"
    run(gw, go)


def test_streaming_events_each_in_own_padded_chunk(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        body, ctx = seal(gw.keys.current.key.config,
                         inner(CHAT, chat("hi", stream=True, max_tokens=5)), chunked=True)
        chunks = await call(gw, CREQ, body)
        assert isinstance(chunks, list)
        streamed = open_stream(ctx, chunks)
        assert streamed.status == 200
        assert streamed.events()[-1] == "[DONE]"
        # head, one chunk per event (>= 1 delta + [DONE]), final
        assert len(chunks) == len(streamed.events()) + 2
        middle = {len(c) for c in chunks[1:-1]}
        assert len(middle) == 1  # every event chunk has the same sealed size (R7)
    run(gw, go)


def test_completions_echo_returns_prompt_first(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        doc = {"prompt": "canary-echo-41", "max_tokens": 3, "echo": True, "temperature": 0}
        body, ctx = seal(gw.keys.current.key.config, inner(COMPLETIONS, doc), chunked=False)
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)
        text = json.loads(open_whole(ctx, chunks[0]).content)["choices"][0]["text"]
        assert text.startswith("canary-echo-41")
    run(gw, go)


def test_models_route(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        body, ctx = seal(gw.keys.current.key.config, inner(b"/v1/models", method=b"GET"),
                         chunked=False)
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)
        doc = json.loads(open_whole(ctx, chunks[0]).content)
        assert doc["data"][0]["id"] == model.name
    run(gw, go)


@pytest.mark.parametrize(("method", "path", "authority"), [
    pytest.param(b"GET", b"/admin", b"node.hushcc.invalid", id="admin"),
    pytest.param(b"POST", b"/v1/embeddings", b"node.hushcc.invalid", id="other-api"),
    pytest.param(b"GET", b"https://example.com/", b"example.com", id="absolute-form"),
    pytest.param(b"CONNECT", b"", b"example.com:443", id="connect"),
    pytest.param(b"GET", b"/v1/chat/completions", b"node.hushcc.invalid", id="wrong-method"),
])
def test_not_an_open_proxy_g15(model: LoadedModel, method: bytes, path: bytes,
                               authority: bytes) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        body, ctx = seal(gw.keys.current.key.config,
                         inner(path, chat("x"), method=method, authority=authority),
                         chunked=False)
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)  # encapsulated: the error is after decapsulation
        response = open_whole(ctx, chunks[0])
        assert response.status == 404
        assert json.loads(response.content)["error"]["code"] == "unknown_url"
        assert gw.counts["submitted"] == 0
    run(gw, go)


def test_replay_refused_before_engine_g3(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        body, ctx = seal(gw.keys.current.key.config, inner(CHAT, chat("once")), chunked=False)
        first = await call(gw, REQ, body)
        assert isinstance(first, list)
        assert open_whole(ctx, first[0]).status == 200
        again = await call(gw, REQ, body)
        assert isinstance(again, list)
        replayed = open_whole(ctx, again[0])
        assert replayed.status == 400
        assert json.loads(replayed.content)["error"]["code"] == "replayed_request"
        assert gw.counts["submitted"] == 1
        assert gw.engine.stats().completed == 1  # the engine saw exactly one request
    run(gw, go)


def test_unknown_key_id_is_plain_422_before_decapsulation_g6(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        config = gw.keys.current.key.config
        body, _ = seal(config, inner(CHAT, chat("x")), chunked=False)
        answer = await call(gw, REQ, bytes([(config.key_id + 1) % 256]) + body[1:])
        assert isinstance(answer, Plain)
        assert answer.status == 422
        assert json.loads(answer.body)["type"].endswith("#ohttp-key")
        # positive twin: the untouched request is served
        ok = await call(gw, REQ, body)
        assert isinstance(ok, list)
    run(gw, go)


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda b: b[:5], id="short-header"),
    pytest.param(lambda b: b[:20], id="short-enc"),
    pytest.param(lambda b: b[:-1], id="truncated-tag"),
    pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="bit-flip"),
    pytest.param(lambda b: b + b"\x00", id="appended-byte"),
])
def test_decapsulation_failure_is_plain_opaque_400_g14(model: LoadedModel, mutate) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        body, _ = seal(gw.keys.current.key.config, inner(CHAT, chat("x")), chunked=False)
        answer = await call(gw, REQ, mutate(body))
        assert answer == Plain(400)
        assert gw.counts["submitted"] == 0
    run(gw, go)


def test_errors_after_decapsulation_are_encapsulated_g14(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        config = gw.keys.current.key.config
        body, ctx = encapsulate_request(config, b"\x07not-bhttp")
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)
        assert open_whole(ctx, chunks[0]).status == 400
        bad = {"messages": "nope"}
        body, ctx = seal(config, inner(CHAT, bad), chunked=False)
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)
        error = json.loads(open_whole(ctx, chunks[0]).content)["error"]
        assert error["type"] == "invalid_request_error"
        too_many = chat("x", max_tokens=100_000)
        body, ctx = seal(config, inner(CHAT, too_many), chunked=True)
        chunks = await call(gw, CREQ, body)
        assert isinstance(chunks, list)
        assert open_stream(ctx, chunks).status == 400
    run(gw, go)


def test_date_outside_window_gets_encapsulated_date_problem_g5(model: LoadedModel) -> None:
    clock = Clock()
    gw = make_gateway(model, clock)

    async def go() -> None:
        config = gw.keys.current.key.config
        for skew, status in ((timedelta(seconds=61), 400), (timedelta(seconds=-61), 400),
                             (timedelta(seconds=59), 200)):
            body, ctx = seal(config, inner(CHAT, chat("x"), date=clock.now + skew), chunked=False)
            chunks = await call(gw, REQ, body)
            assert isinstance(chunks, list)
            response = open_whole(ctx, chunks[0])
            assert response.status == status
            if status == 400:
                assert json.loads(response.content)["type"].endswith("#date")
                assert (b"cache-control", b"no-store") in response.headers
    run(gw, go)


def test_rotated_key_answers_422_after_grace_k5(model: LoadedModel) -> None:
    clock = Clock()
    gw = make_gateway(model, clock)

    async def go() -> None:
        old, start = gw.keys.current.key.config, clock.now
        clock.now = start + timedelta(hours=1, minutes=1)
        new, retired = gw.keys.tick(clock.now)
        assert len(new) == 1
        assert not retired
        body, _ = seal(old, inner(CHAT, chat("x"), date=clock.now), chunked=False)
        assert isinstance(await call(gw, REQ, body), list)  # in grace: still served
        clock.now = start + timedelta(hours=1, minutes=5)
        _, retired = gw.keys.tick(clock.now)
        assert [e.key_id for e in retired] == [old.key_id]
        body, _ = seal(old, inner(CHAT, chat("x"), date=clock.now), chunked=False)
        answer = await call(gw, REQ, body)
        assert isinstance(answer, Plain)
        assert answer.status == 422
        body, _ = seal(gw.keys.current.key.config, inner(CHAT, chat("x"), date=clock.now),
                       chunked=False)
        assert isinstance(await call(gw, REQ, body), list)  # the new key works
    run(gw, go)


def test_chunk_sizes_do_not_depend_on_token_lengths_r7(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def sizes(prompt: str, seed: int) -> tuple[list[int], str]:
        doc = chat(prompt, stream=True, max_tokens=8, temperature=1.0, seed=seed)
        body, ctx = seal(gw.keys.current.key.config, inner(CHAT, doc), chunked=True)
        chunks = await call(gw, CREQ, body)
        assert isinstance(chunks, list)
        return [len(c) for c in chunks], open_stream(ctx, chunks).text()

    async def go() -> None:
        runs = [await sizes(p, s) for p, s in (("a", 1), ("a much longer prompt here", 7),
                                               ("b", 2), ("tokens prompts answers", 3))]
        texts = [t for _, t in runs]
        assert len({tuple(len(w) for w in t.split()) for t in texts}) > 1  # profiles differ
        shapes = [Counter(s[1:-1]) for s, _ in runs]
        assert all(len(s) == 1 for s in shapes)  # one size for every event chunk
        assert len({next(iter(s)) for s in shapes}) == 1  # the same size in every response
    run(gw, go)


def test_wrong_media_type_is_415(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        assert await call(gw, "application/json", b"{}") == Plain(415)
    run(gw, go)


def test_kv_pool_zero_once_idle_and_ids_random_e1_e9(model: LoadedModel) -> None:
    gw = make_gateway(model)

    async def go() -> None:
        ids = []
        for text in ("first canary-kv-1", "second canary-kv-2"):
            body, ctx = seal(gw.keys.current.key.config,
                             inner(CHAT, chat(text, cache_salt="tenant-secret-0123")),
                             chunked=False)
            chunks = await call(gw, REQ, body)
            assert isinstance(chunks, list)
            doc = json.loads(open_whole(ctx, chunks[0]).content)
            ids.append(doc["id"])
            assert set(doc) == {"id", "object", "created", "model", "choices", "usage"}
        assert ids[0] != ids[1]  # random ids, not a counter (E9)
        assert not gw.engine.runner.kv_pool_is_zero()  # twin
        await gw.engine.close()
        assert gw.engine.runner.kv_pool_is_zero()
    run(gw, go)


@pytest.mark.parametrize("doc", [
    pytest.param({"messages": [{"role": "canary-role-77", "content": "x"}]}, id="bad-role"),
    pytest.param({"prompt": "canary-long-77 " * 3000}, id="prompt-too-long"),
    pytest.param({"prompt": "canary-stop-77", "stop": [5]}, id="bad-stop"),
])
def test_error_bodies_carry_no_request_content_n4(model: LoadedModel, doc: dict[str, object],
                                                   canaries) -> None:
    gw = make_gateway(model, api=ApiLimits(max_prompt_chars=4096))
    canaries.add("canary")

    async def go() -> None:
        path = CHAT if "messages" in doc else COMPLETIONS
        body, ctx = seal(gw.keys.current.key.config, inner(path, doc), chunked=False)
        chunks = await call(gw, REQ, body)
        assert isinstance(chunks, list)
        response = open_whole(ctx, chunks[0])
        assert response.status == 400
        assert b"canary" not in response.content
    run(gw, go)


def test_concurrent_canaries_under_forced_preemption_e6(model: LoadedModel) -> None:
    gw = make_gateway(model, num_blocks=24)  # 96 token slots for 12 requests of ~30: preempts

    async def one(i: int) -> tuple[str, str]:
        canary = f"zq{i:02d}canary"
        doc = {"prompt": canary, "echo": True, "max_tokens": 24, "temperature": 0.7,
               "seed": i, "ignore_eos": True, "stream": i % 2 == 0}
        stream = i % 2 == 0
        body, ctx = seal(gw.keys.current.key.config, inner(COMPLETIONS, doc), chunked=stream)
        chunks = await call(gw, CREQ if stream else REQ, body)
        assert isinstance(chunks, list)
        if stream:
            return canary, open_stream(ctx, chunks).text()
        return canary, json.loads(open_whole(ctx, chunks[0]).content)["choices"][0]["text"]

    async def go() -> None:
        results = await asyncio.gather(*(one(i) for i in range(12)))
        names = [c for c, _ in results]
        for canary, text in results:
            assert text.startswith(canary)
            assert [c for c in names if c in text] == [canary]
        assert gw.engine.stats().preemptions > 0  # the batches really were squeezed
    run(gw, go)


def test_retired_key_object_is_gone_from_the_process_k5_g7(model: LoadedModel) -> None:
    import gc  # noqa: PLC0415

    from ohttp.keyconfig import GatewayKey  # noqa: PLC0415

    clock = Clock()
    gw = make_gateway(model, clock)

    async def go() -> None:
        old = gw.keys.current.key.config.public_key

        def live_keys() -> list[bytes]:
            gc.collect()
            return [o.config.public_key for o in gc.get_objects() if type(o) is GatewayKey]

        assert old in live_keys()  # positive twin: found while live
        clock.now += timedelta(hours=1, minutes=5)
        gw.keys.tick(clock.now)
        assert old not in live_keys()
        assert gw.keys.current.key.config.public_key in live_keys()
    run(gw, go)
