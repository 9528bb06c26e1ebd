"""E1, E2, E5, E6: KV residue, zeroed allocation, cancellation/preemption erasure, no cross-talk.

Canary prompts carry token ids used nowhere else; after the requests end, neither the runner's
KV pool nor any structure reachable from the engine may hold them. Each negative check has its
positive twin: while the requests run, the same scans do find the canaries.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import random
import time
from typing import TYPE_CHECKING

import pytest
import torch

from node.engine.engine import Engine, EngineStats, RequestStream
from node.engine.runner import PagedRunner
from tests.node.engine.engine_fakes import ToyTokenizer, walk_ints
from tests.node.engine.engine_helpers import (
    SALT_A,
    SALT_B,
    collect,
    make_engine,
    reference_greedy,
    req,
    tokens_of,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from node.engine.batch import ForwardChunk
    from tests.canary_guard import CanaryRegistry

SKIP = (PagedRunner, ToyTokenizer, torch.Tensor, torch.Generator)


def canary(k: int, n: int = 8) -> list[int]:
    """Distinct ids in 300..499 (no engine limit or counter in these tests takes such a value)."""
    return [300 + 20 * k + i for i in range(n)]


def found(engine: Engine, ids: Iterable[int]) -> set[int]:
    return set(walk_ints(engine, skip=SKIP)) & set(ids)


async def until_idle(engine: Engine, limit: int = 2000) -> None:
    for _ in range(limit):
        if engine.idle:
            return
        await asyncio.sleep(0.001)
    pytest.fail("engine did not go idle")


def test_pool_is_allocated_zeroed() -> None:  # E2
    eng = make_engine()
    assert eng.runner.kv_pool_is_zero()
    assert eng.runner.kv_pool.abs().sum().item() == 0


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlap"])
@pytest.mark.parametrize("cache", [False, True], ids=["cache-off", "cache-on"])
def test_canaries_leave_no_residue_after_finish_cancel_and_disconnect(  # E1, E5
    cache: bool, overlap: bool,
) -> None:
    async def go() -> None:
        now = [0.0]
        eng = make_engine(num_blocks=48, cache=cache, budget=16, clock=lambda: now[0],
                          overlap=overlap)
        prompts = [canary(k) + canary(k) for k in range(3)]  # 16 tokens: full blocks, cacheable
        done = eng.submit(req(prompts[0], max_tokens=6), SALT_A)
        cancelled = eng.submit(req(prompts[1], max_tokens=120), SALT_A)
        dropped = eng.submit(req(prompts[2], max_tokens=120), SALT_B)

        reading = asyncio.Event()

        async def consume_forever(stream: RequestStream) -> None:
            async for _ in stream:
                reading.set()

        first = await anext(cancelled)
        disconnect = asyncio.create_task(consume_forever(dropped))
        await reading.wait()  # the client is connected and reading
        assert eng.stats().running == 3  # submit queued all three at once
        everything = [i for p in prompts for i in p]
        live = set(prompts[1] + prompts[2])
        assert first.finish_reason is None
        assert found(eng, everything) >= live  # positive twin: the scan sees live requests
        assert not eng.runner.kv_pool_is_zero()
        steps = eng.stats().steps
        eng.cancel(cancelled.request_id)  # E5: explicit cancel
        disconnect.cancel()  # E5: client disconnect (the consuming task is cancelled)
        await asyncio.gather(disconnect, return_exceptions=True)
        assert (await collect(cancelled))[-1].finish_reason == "cancelled"
        await until_idle(eng)
        assert eng.stats().cancelled == 2
        assert eng.stats().steps - steps <= 1  # cancels applied at the next step boundary
        assert not found(eng, everything)
        assert eng.runner.kv_pool_is_zero() != cache  # with the cache on, full blocks stay
        assert (await collect(done))[-1].finish_reason == "length"
        await until_idle(eng)
        assert not found(eng, everything), "canary token ids left in an engine structure"
        if cache:  # the tenant's full prompt blocks stay cached until TTL, then are zeroed
            assert eng.stats().cached_blocks > 0
            assert not eng.runner.kv_pool_is_zero()
            now[0] = 31.0
            eng.expire_cache()
        assert eng.runner.kv_pool_is_zero(), "KV residue after the requests ended"
        await eng.close()
    asyncio.run(go())


def test_idle_engine_expires_cached_prefixes_by_itself() -> None:
    async def go() -> None:
        eng = make_engine(cache=True, ttl=0.1)
        await collect(eng.submit(req(canary(0) * 2, max_tokens=2), SALT_A))
        assert not eng.runner.kv_pool_is_zero()  # cached right after the request
        deadline = time.monotonic() + 5
        while not eng.runner.kv_pool_is_zero() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the pool
            await asyncio.sleep(0.05)
        assert eng.runner.kv_pool_is_zero()
        await eng.close()
    asyncio.run(go())


@pytest.mark.parametrize(("cache", "spec"), [(False, False), (True, True)],
                         ids=["plain", "cache+speculation"])
def test_concurrent_requests_with_preemption_match_running_alone(  # E6
    cache: bool, spec: bool,
) -> None:
    rng = random.Random(11)
    jobs = []
    for k in range(6):
        body = [rng.randrange(3, 290) for _ in range(rng.randint(2, 30))]
        jobs.append((canary(k, 4) + body, rng.randint(4, 16), (SALT_A, SALT_B)[k % 2]))
    expected = [reference_greedy(p, n) for p, n, _ in jobs]

    async def go() -> tuple[list[list[int]], EngineStats]:
        eng = make_engine(num_blocks=20, cache=cache, spec=spec, budget=24)
        streams = [eng.submit(req(p, max_tokens=n), s) for p, n, s in jobs]
        outs = await asyncio.gather(*(collect(s) for s in streams))
        await until_idle(eng)
        stats = eng.stats()
        if not cache:
            assert eng.runner.kv_pool_is_zero()
        await eng.close()
        assert eng.runner.kv_pool_is_zero()
        return [tokens_of(o) for o in outs], stats

    got, stats = asyncio.run(go())
    assert stats.preemptions > 0  # the tiny pool really forced recompute
    assert (stats.cache_hit_blocks > 0) == cache  # recompute reused the tenant's own blocks
    assert (stats.draft_tokens > 0) == spec
    for k, (out, exp) in enumerate(zip(got, expected, strict=True)):
        assert out == exp, f"request {k} differs from running alone"
        others = {i for j in range(6) if j != k for i in canary(j, 4)}
        assert not set(out) & others - set(exp)


def test_abandoned_stream_is_cancelled_and_erased() -> None:  # E5: consumer drops the iterator
    async def go() -> None:
        eng = make_engine(cache=False)
        stream = eng.submit(req(canary(1), max_tokens=120), SALT_A)
        async for _ in stream:
            break
        assert not eng.runner.kv_pool_is_zero()  # positive twin: it was running
        del stream  # the async generator's finalizer closes it
        await until_idle(eng)
        assert eng.stats().cancelled == 1
        assert eng.runner.kv_pool_is_zero()
        assert not found(eng, canary(1))
        await eng.close()
    asyncio.run(go())


def test_close_waits_for_the_forward_in_flight_before_erasing() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        real = eng.runner.forward
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow(chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
            loop.call_soon_threadsafe(started.set)
            time.sleep(0.2)
            return real(chunks)  # writes KV after close() was called

        eng.runner.forward = slow  # type: ignore[method-assign]
        stream = eng.submit(req(canary(2), max_tokens=50), SALT_A)
        consumer = asyncio.create_task(collect(stream))
        await started.wait()
        await eng.close()
        await asyncio.sleep(0.3)  # any forward still running has finished by now
        assert eng.runner.kv_pool_is_zero()
        (outcome,) = await asyncio.gather(consumer, return_exceptions=True)
        assert isinstance(outcome, Exception)
    asyncio.run(go())


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlap"])
def test_random_mix_of_cancels_disconnects_and_completions_leaves_nothing(
    canaries: CanaryRegistry, overlap: bool,
) -> None:
    """E5 + E6 together: 16 requests over a tiny pool, some cancelled or dropped mid-way."""
    rng = random.Random(3)
    jobs = []
    for k in range(8):
        prompt = canary(k, 4) + [rng.randrange(3, 290) for _ in range(rng.randint(1, 24))]
        jobs.append((prompt, rng.randint(3, 14), rng.choice(["finish", "cancel", "drop"])))
        for t in prompt[:4]:
            canaries.add(f"w{t} ")  # the toy tokenizer's text of the canary ids
    jobs += [(p, n, "finish") for p, n, _ in jobs]  # each prompt twice: cache hits + twins
    expected = {i: reference_greedy(p, n) for i, (p, n, how) in enumerate(jobs) if how == "finish"}

    async def go() -> tuple[list[list[int] | None], EngineStats]:
        eng = make_engine(num_blocks=24, cache=True, spec=True, budget=20, overlap=overlap)

        async def drive(i: int, prompt: list[int], n: int, how: str) -> list[int] | None:
            stream = eng.submit(req(prompt, max_tokens=n), (SALT_A, SALT_B)[i % 2])
            if how == "finish":
                return tokens_of(await collect(stream))
            await anext(stream)
            if how == "cancel":
                eng.cancel(stream.request_id)
                await collect(stream)
            else:
                await stream.aclose()
            return None

        outs = await asyncio.gather(*(drive(i, *job) for i, job in enumerate(jobs)))
        await until_idle(eng)
        everything = {t for p, _, _ in jobs for t in p[:4]}
        assert not found(eng, everything)
        stats = eng.stats()
        await eng.close()
        assert eng.runner.kv_pool_is_zero()
        return outs, stats

    outs, stats = asyncio.run(go())
    assert stats.cancelled == sum(how != "finish" for _, _, how in jobs) > 0
    assert stats.preemptions > 0
    assert stats.cache_hit_blocks > 0
    for i, exp in expected.items():
        assert outs[i] == exp


def test_preemption_and_erasure_never_touch_the_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    """E5: recompute, never swap: a run with forced preemption opens no file at all."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the engine opened a file")

    eng = make_engine(num_blocks=12, cache=False, budget=16)
    jobs = [(canary(k, 4) + list(range(10 + k)), 12) for k in range(4)]

    async def go() -> int:
        monkeypatch.setattr(builtins, "open", refuse)
        monkeypatch.setattr(os, "open", refuse)
        with pytest.raises(AssertionError):  # positive twin: the trap is armed
            open(os.devnull)  # noqa: PTH123, ASYNC230, SIM115
        await asyncio.gather(*(collect(eng.submit(req(p, max_tokens=n), SALT_A)) for p, n in jobs))
        monkeypatch.undo()
        preemptions = eng.stats().preemptions
        await eng.close()
        return preemptions

    assert asyncio.run(go()) > 0
    assert eng.runner.kv_pool_is_zero()
