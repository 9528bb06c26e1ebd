"""`Engine.submit` checks and queues at once (issue 9 item 2): batching and cancel do not wait
for a stream's first read; a stream dropped unread cancels its request."""

from __future__ import annotations

import asyncio
import gc

from tests.node.engine.engine_helpers import (
    SALT_A,
    SALT_B,
    collect,
    make_engine,
    reference_greedy,
    req,
    tokens_of,
)

P1 = [11, 12, 13, 14, 15, 16]
P2 = [21, 22, 23, 24, 25]
N = 10


def test_submitted_streams_share_steps_read_together_or_one_after_the_other() -> None:
    ref1, ref2 = reference_greedy(P1, N), reference_greedy(P2, N)

    async def steps_for(mode: str) -> int:
        eng = make_engine(cache=False)
        s1 = eng.submit(req(P1, max_tokens=N), SALT_A)
        if mode == "alone":
            assert tokens_of(await collect(s1)) == ref1
        else:
            s2 = eng.submit(req(P2, max_tokens=N), SALT_B)
            if mode == "together":
                out1, out2 = await asyncio.gather(collect(s1), collect(s2))
            else:  # the second stream is read only after the first has ended
                out1 = await collect(s1)
                out2 = await collect(s2)
            assert tokens_of(out1) == ref1
            assert tokens_of(out2) == ref2
        steps = eng.stats().steps
        await eng.close()
        return steps

    async def go() -> None:
        alone = await steps_for("alone")
        assert alone >= N  # positive twin: one request takes a step per token
        for mode in ("together", "sequential"):
            assert await steps_for(mode) <= alone + 1, mode  # both rode the same steps
    asyncio.run(go())


def test_cancel_before_the_first_read_ends_the_stream_cancelled() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        cancelled = eng.submit(req(P1, max_tokens=50), SALT_A)
        kept = eng.submit(req(P2, max_tokens=N), SALT_A)
        eng.cancel(cancelled.request_id)  # nothing has read either stream yet
        deltas = await collect(cancelled)
        assert [d.finish_reason for d in deltas] == ["cancelled"]
        assert deltas[0].completion_tokens == 0
        out = await collect(kept)  # positive twin: the other request is served in full
        assert out[-1].finish_reason == "length"
        assert tokens_of(out) == reference_greedy(P2, N)
        assert eng.stats().cancelled == 1
        assert eng.stats().completed == 1
        assert eng.idle
        assert eng.runner.kv_pool_is_zero()
        await eng.close()
    asyncio.run(go())


def test_stream_dropped_unread_cancels_its_request() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        stream = eng.submit(req(P1, max_tokens=100), SALT_A)
        assert not eng.idle  # queued by submit itself
        del stream
        gc.collect()
        for _ in range(2000):
            if eng.idle:
                break
            await asyncio.sleep(0.001)
        assert eng.idle
        assert eng.stats().cancelled == 1
        assert eng.runner.kv_pool_is_zero()
        await eng.close()
    asyncio.run(go())
