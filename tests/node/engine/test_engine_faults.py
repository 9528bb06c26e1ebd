"""One tenant's request cannot fail another's (issue 9 item 1): malformed sampling values are
refused at submit naming the field, degenerate ones sample greedily, and a failure while
finishing one request's step ends that request alone, its blocks zeroed, while the others go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import pytest

from hushcc.errors import ProtocolError
from node.engine.engine import EngineError
from node.engine.sampler import SampledRow, choose_tokens
from node.engine.sampling import SamplingParams, sample
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
    from collections.abc import Sequence

    import torch

A1 = [31, 32, 33, 34, 35, 36, 37]
A2 = [41, 42, 43]
B = [351, 352, 353, 354, 355]  # tenant B's canary prompt
POISON_SEED = 4242


@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlap"])
def test_failure_of_one_request_ends_it_alone_and_zeroes_its_blocks(
    monkeypatch: pytest.MonkeyPatch, overlap: bool,
) -> None:
    def faulty(logits: torch.Tensor, params: SamplingParams, draw: float) -> int:
        if params.seed == POISON_SEED:
            raise RuntimeError("sampler blew up")
        return sample(logits, params, draw)

    def faulty_batch(logits: torch.Tensor, sampled: Sequence[SampledRow]) -> list[int]:
        if sampled:  # B is the only sampling request: the whole batched call fails with it
            raise RuntimeError("batched sampler blew up")
        return choose_tokens(logits, sampled)

    monkeypatch.setattr("node.engine.sampler.sample", faulty)
    monkeypatch.setattr("node.engine.sampler.choose_tokens", faulty_batch)

    async def go() -> None:
        eng = make_engine(cache=False, overlap=overlap)
        a1 = eng.submit(req(A1, max_tokens=12), SALT_A)
        a2 = eng.submit(req(A2, max_tokens=12), SALT_A)
        b = eng.submit(req(B, max_tokens=12, temperature=0.7, seed=POISON_SEED), SALT_B)
        with pytest.raises(EngineError) as info:
            await collect(b)
        assert "blew" not in str(info.value)
        assert not eng.idle  # tenant A's requests are still running ...
        owned = {blk for seq in eng.scheduler.running for blk in seq.block_table}
        free = sorted(set(range(eng.runner.num_blocks)) - owned)
        assert eng.runner.kv_pool_is_zero(free)  # ... and B's blocks are already zero
        assert not eng.runner.kv_pool_is_zero(sorted(owned))  # positive twin: A's are not
        out1, out2 = await asyncio.gather(collect(a1), collect(a2))
        assert tokens_of(out1) == reference_greedy(A1, 12)
        assert tokens_of(out2) == reference_greedy(A2, 12)
        assert out1[-1].finish_reason == out2[-1].finish_reason == "length"
        st = eng.stats()
        assert (st.failed, st.completed) == (1, 2)
        assert eng.runner.kv_pool_is_zero()
        await eng.close()
    asyncio.run(go())


def test_failed_batched_sampler_falls_back_to_each_request_alone_with_the_same_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run() -> list[list[int]]:
        eng = make_engine(cache=False, spec=True)
        streams = [eng.submit(req(A1, max_tokens=10), SALT_A),
                   eng.submit(req(A1 + A1, max_tokens=10), SALT_A),  # repeats: drafts verified
                   eng.submit(req(B, max_tokens=10, temperature=0.9, top_k=40, seed=5), SALT_B)]
        outs = await asyncio.gather(*(collect(s) for s in streams))
        assert eng.stats().failed == 0
        assert eng.runner.kv_pool_is_zero()
        await eng.close()
        return [tokens_of(o) for o in outs]

    batched = asyncio.run(run())

    def broken(logits: torch.Tensor, sampled: Sequence[SampledRow]) -> list[int]:
        raise RuntimeError("batched sampler blew up")

    monkeypatch.setattr("node.engine.sampler.choose_tokens", broken)
    assert asyncio.run(run()) == batched  # the per-row path gives the same tokens
    assert batched[0] == reference_greedy(A1, 10)


def test_degenerate_sampling_values_sample_greedily_and_fail_nobody() -> None:
    async def go() -> None:
        eng = make_engine(cache=False)
        a = eng.submit(req(A1, max_tokens=12), SALT_A)
        b1 = eng.submit(req(B, max_tokens=8, temperature=1.0, top_p=1e-50, seed=1), SALT_B)
        b2 = eng.submit(req(B, max_tokens=8, temperature=1e-42, seed=2), SALT_B)
        b3 = eng.submit(req(B, max_tokens=8, temperature=1e-42, top_p=1e-50, top_k=3), SALT_B)
        outs = await asyncio.gather(*(collect(s) for s in (a, b1, b2, b3)))
        assert tokens_of(outs[0]) == reference_greedy(A1, 12)
        for out in outs[1:]:  # nothing but the top token survives: greedy
            assert tokens_of(out) == reference_greedy(B, 8)
        assert eng.stats().failed == 0
        await eng.close()
    asyncio.run(go())


BAD_VALUES: list[tuple[str, Any]] = [
    ("max_tokens", 8.0), ("max_tokens", True), ("max_tokens", 0), ("max_tokens", 2**70),
    ("top_k", 2.0), ("top_k", False), ("top_k", -1),
    ("seed", 1.5), ("seed", True), ("seed", -1), ("seed", 2**63),
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", -0.5),
    ("temperature", True), ("temperature", "1"), ("temperature", 10**400),
    ("top_p", float("nan")), ("top_p", 0.0), ("top_p", 1.5), ("top_p", None),
    ("ignore_eos", 1), ("stop", ["x"]), ("stop", ("",)),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES,
                         ids=[f"{n}={v!r}"[:30] for n, v in BAD_VALUES])
def test_malformed_sampling_values_are_refused_naming_the_field(name: str, value: Any) -> None:
    with pytest.raises(ProtocolError) as info:  # at construction
        SamplingParams(**{name: value})
    assert name in str(info.value)
    good = SamplingParams(max_tokens=4)
    object.__setattr__(good, name, value)  # altered behind the frozen dataclass's back

    async def go() -> None:
        eng = make_engine(cache=False)
        free = eng.stats().free_blocks
        request = dataclasses.replace(req(B), params=good)
        with pytest.raises(ProtocolError) as info:  # and again at submit
            eng.submit(request, SALT_B)
        message = str(info.value)
        assert name in message
        assert not any(str(t) in message for t in B)
        assert eng.idle
        assert eng.stats().free_blocks == free  # nothing allocated
        ok = await collect(eng.submit(req(B, max_tokens=4), SALT_B))  # positive twin
        assert ok[-1].finish_reason == "length"
        await eng.close()
    asyncio.run(go())
