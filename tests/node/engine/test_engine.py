"""Engine API: greedy correctness, streaming, EOS / max_tokens / stop strings, seeds, speculation,
cancellation, failures, stats (counts only)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from typing import TYPE_CHECKING, Any

import pytest

from node.engine.engine import EngineError, RequestStream
from tests.node.engine.engine_helpers import (
    SALT_A,
    collect,
    generate,
    make_engine,
    reference_greedy,
    req,
    text_of,
    tokens_of,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from node.engine.batch import ForwardChunk

PROMPT = [random.Random(5).randrange(3, 500) for _ in range(23)]


def test_greedy_matches_plain_runner_and_streams_incrementally() -> None:
    ref = reference_greedy(PROMPT, 12)
    deltas = generate(make_engine(budget=8), PROMPT, max_tokens=12)  # chunked prefill: 8 + 8 + 7
    assert tokens_of(deltas) == ref
    assert len(deltas) >= 12  # one delta per token, then the final one
    assert deltas[-1].finish_reason == "length"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].completion_tokens == 12
    assert deltas[-1].prompt_tokens == 23


def test_eos_stops_unless_ignored() -> None:
    ref = reference_greedy(PROMPT, 12)
    eos = ref[4]
    cut = ref.index(eos)
    deltas = generate(make_engine(eos=[eos]), PROMPT, max_tokens=12, ignore_eos=False)
    assert tokens_of(deltas) == ref[:cut]  # EOS itself is not text
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens == cut + 1
    deltas = generate(make_engine(eos=[eos]), PROMPT, max_tokens=12, ignore_eos=True)
    assert tokens_of(deltas) == ref


def test_stop_string_truncates_and_is_never_streamed() -> None:
    ref = reference_greedy(PROMPT, 12)
    stop = f"w{ref[5]} w{ref[6]}"
    full = "".join(f"w{t} " for t in ref)
    deltas = generate(make_engine(), PROMPT, max_tokens=12, stop=(stop,))
    assert text_of(deltas) == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop"
    assert all(stop not in d.text for d in deltas)


def test_same_seed_same_output_and_other_seed_differs() -> None:
    kw: dict[str, Any] = {"max_tokens": 16, "temperature": 1.5, "top_k": 50, "top_p": 0.95}
    a = tokens_of(generate(make_engine(), PROMPT, seed=7, **kw))
    b = tokens_of(generate(make_engine(), PROMPT, seed=7, **kw))
    c = tokens_of(generate(make_engine(), PROMPT, seed=8, **kw))
    assert a == b
    assert a != c


def test_speculation_gives_the_greedy_output() -> None:
    prompt = [5, 6, 7, 8, 9] * 6  # repetitive: prompt lookup finds drafts
    ref = reference_greedy(prompt, 24)
    eng = make_engine(spec=True)
    assert tokens_of(generate(eng, prompt, max_tokens=24)) == ref
    st = eng.stats()
    assert st.draft_tokens > 0  # speculation really ran (positive twin of "same output")
    assert 0 <= st.accepted_drafts <= st.draft_tokens


def test_cancel_ends_stream_and_frees_within_one_step() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        stream = eng.submit(req(PROMPT, max_tokens=100), SALT_A)
        first = await anext(stream)
        assert first.finish_reason is None
        steps = eng.stats().steps
        eng.cancel(stream.request_id)
        rest = await collect(stream)
        assert rest[-1].finish_reason == "cancelled"
        assert eng.stats().steps - steps <= 1
        assert eng.idle
        assert eng.runner.kv_pool_is_zero()
        assert eng.stats().cancelled == 1
        await eng.close()
    asyncio.run(go())


def test_runner_failure_fails_the_request_and_erases_it() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        real = eng.runner.forward
        calls: list[int] = []

        def flaky(chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("device lost")
            return real(chunks)

        eng.runner.forward = flaky  # type: ignore[method-assign]
        stream = eng.submit(req(PROMPT, max_tokens=50), SALT_A)
        with pytest.raises(EngineError) as info:
            await collect(stream)
        assert "device" not in str(info.value)
        assert eng.idle
        assert eng.runner.kv_pool_is_zero()
        assert eng.stats().failed == 1
        await eng.close()
    asyncio.run(go())


def test_stats_are_counts_only_and_ids_are_random() -> None:
    async def go() -> None:
        eng = make_engine()
        s1 = eng.submit(req(PROMPT), SALT_A)
        s2 = eng.submit(req(PROMPT), SALT_A)
        assert isinstance(s1, RequestStream)
        assert s1.request_id != s2.request_id
        assert len(s1.request_id) == 32
        await collect(s1)
        await collect(s2)
        st = eng.stats()
        assert all(type(getattr(st, f.name)) is int for f in dataclasses.fields(st))
        assert st.completed == 2
        assert st.running == 0
        assert st.waiting == 0
        await eng.close()
    asyncio.run(go())


def test_every_forward_runs_on_one_worker_thread_not_the_loop() -> None:
    threads: list[int] = []

    async def go() -> int:
        eng = make_engine(budget=8)
        forward = eng.runner.forward

        def recording(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return forward(*args, **kwargs)

        eng.runner.forward = recording  # type: ignore[method-assign]
        await asyncio.gather(*(collect(eng.submit(req(PROMPT, max_tokens=6), SALT_A))
                               for _ in range(3)))
        await eng.close()
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert len(threads) >= 6  # chunked prefills, then decode steps
    assert len(set(threads)) == 1
    assert loop_thread not in threads
