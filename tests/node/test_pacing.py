"""R7's optional policy: with `pace` set, streamed chunks leave on a fixed clock, not per token.

The gateway runs in process over the tiny model with the real clock; its sleep is wrapped to
record the tick each chunk waited for. With the policy on, every chunk after the head waits for
its own tick, the ticks sit on one grid of the interval whatever the prompt, no chunk leaves before
its tick, and every chunk has the same padded size; the text is the same as without the policy.
The twin (policy off) sleeps on no clock and lets chunks out back to back, as tokens come.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import TYPE_CHECKING

from node.pacing import sleep_until
from tests.node.node_client import CHAT, open_stream, seal
from tests.node.node_client import inner as inner_request
from tests.node.test_gateway import CREQ, chat, make_gateway, model, run

if TYPE_CHECKING:
    from node.gateway import Gateway
    from node.model_files import LoadedModel

__all__ = ["model"]  # the module-scoped tiny model fixture, shared with test_gateway
PACE = 0.03


class Recorder:
    """The gateway's `sleep_until`, recording each tick's deadline."""

    def __init__(self) -> None:
        self.ticks: list[float] = []

    async def __call__(self, deadline: float) -> None:
        self.ticks.append(deadline)
        await sleep_until(deadline)


async def stream(gw: Gateway, recorder: Recorder, prompt: str, seed: int, *, tokens: int = 12
                 ) -> tuple[list[int], list[float], list[float], str]:
    """(chunk sizes, the tick each chunk after the head waited for, when it left, the text)."""
    doc = chat(prompt, stream=True, max_tokens=tokens, temperature=1.0, seed=seed)
    body, ctx = seal(gw.keys.current.key.config, inner_request(CHAT, doc), chunked=True)
    answer = await gw.handle(CREQ, body)
    chunks, left, ticks = [], [], []
    async for chunk in answer.chunks:  # type: ignore[union-attr]
        left.append(time.monotonic())
        ticks.append(recorder.ticks[-1] if recorder.ticks else 0.0)
        chunks.append(chunk)
    return [len(c) for c in chunks], ticks[1:], left[1:], open_stream(ctx, chunks).text()


def paced_gateway(model: LoadedModel, pace: float) -> tuple[Gateway, Recorder]:
    gw, recorder = make_gateway(model, pace=pace), Recorder()
    gw.sleep_until = recorder
    return gw, recorder


def test_paced_chunks_leave_on_a_fixed_clock_whatever_the_prompt_r7(model: LoadedModel) -> None:
    gw, recorder = paced_gateway(model, PACE)
    plain, _ = paced_gateway(model, 0.0)

    async def go() -> None:
        texts = set()
        for prompt, seed in (("a", 1), ("a much longer prompt than that one", 7)):
            sizes, ticks, left, text = await stream(gw, recorder, prompt, seed)
            assert len(set(ticks)) == len(ticks)  # every chunk after the head: its own tick
            steps = [(b - a) / PACE for a, b in itertools.pairwise(ticks)]
            assert all(s >= 1 - 1e-9 and abs(s - round(s)) < 1e-6 for s in steps)  # one grid
            assert all(t_left >= tick for t_left, tick in zip(left, ticks, strict=True))
            assert len(set(sizes[1:-1])) == 1  # every event chunk in one padded size
            _, _, _, unpaced = await stream(plain, Recorder(), prompt, seed)
            assert text == unpaced  # coalescing per tick loses and reorders nothing
            texts.add(text)
        assert len(texts) == 2  # the two prompts' answers (token profiles) differ
    try:
        run(gw, go)
    finally:
        run(plain, _noop)


async def _noop() -> None:
    return


def test_without_pace_chunks_follow_the_tokens(model: LoadedModel) -> None:
    gw, recorder = paced_gateway(model, 0.0)

    async def go() -> None:
        _, _, left, _ = await stream(gw, recorder, "a", 1)
        assert recorder.ticks == []  # positive twin: no clock at all
        gaps = [b - a for a, b in itertools.pairwise(left)]
        assert min(gaps) < PACE / 2  # chunks leave back to back, as the engine makes them
    run(gw, go)


def test_paced_text_larger_than_a_bucket_is_split_across_ticks(model: LoadedModel) -> None:
    gw, recorder = paced_gateway(model, 0.25)  # a slow clock: many tokens arrive per tick

    async def go() -> None:
        sizes, ticks, _, text = await stream(gw, recorder, "a", 3, tokens=48)
        assert len(text) > 80  # more than one 256-byte event can carry next to its JSON
        assert Counter(sizes[1:-1]).most_common(1)[0][1] == len(sizes) - 2  # still one size
        assert len(sizes) - 3 >= 2  # so the text left over at least two ticks ([DONE], end)
        assert len(ticks) == len(sizes) - 1
    run(gw, go)
