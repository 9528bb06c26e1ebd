"""Batched sampling on the device (issue 16): the whole step's rows in one call, equal row for row
to the per-row reference, one host transfer, seeds independent of what shares the batch."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ConfigError
from node.engine.batch import ForwardChunk
from node.engine.runner import tiny_runner
from node.engine.sampler import SampledRow, choose, choose_tokens, join_rows
from node.engine.sampling import SamplingParams, sample, seeded_uniform
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

VOCAB = 40
NAN, INF = float("nan"), float("inf")

PARAMS = st.one_of(
    st.just(SamplingParams()),  # greedy
    st.builds(SamplingParams,
              temperature=st.sampled_from([1e-42, 5e-324, 0.05, 0.7, 1.0, 3.0]),
              top_k=st.sampled_from([0, 1, 3, 10, VOCAB, VOCAB + 5]),
              top_p=st.sampled_from([1e-50, 0.3, 0.9, 1.0])),
)
ROW_KIND = st.sampled_from(["normal", "normal", "normal", "nan", "all-nan", "inf", "all-minus-inf",
                            "ties"])


def make_row(kind: str, gen: torch.Generator) -> torch.Tensor:
    row = torch.randn(VOCAB, generator=gen) * 3
    if kind == "nan":
        row[::3] = NAN
    elif kind == "all-nan":
        row[:] = NAN
    elif kind == "inf":
        row[7] = INF
    elif kind == "all-minus-inf":
        row[:] = -INF
    elif kind == "ties":
        row = torch.round(row)  # many equal logits: the stable sort decides top-k / top-p ties
    return row


def batch_and_reference(
    rows: Sequence[tuple[str, SamplingParams, int]], seed: int,
) -> tuple[torch.Tensor, list[SampledRow], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.stack([make_row(kind, gen) for kind, _, _ in rows])
    sampled, expected = [], []
    for i, (_, params, counter) in enumerate(rows):
        u = seeded_uniform(seed, counter)
        expected.append(sample(logits[i], params, u))  # the per-row reference, row alone
        if not params.greedy:
            sampled.append(SampledRow(i, params.temperature, params.top_k, params.top_p, u))
    return logits, sampled, expected


@settings(max_examples=120)
@given(rows=st.lists(st.tuples(ROW_KIND, PARAMS, st.integers(0, 50)), min_size=1, max_size=9),
       seed=st.integers(0, 2**63 - 1))
def test_batched_choice_equals_the_per_row_reference_in_mixed_batches(rows, seed):
    logits, sampled, expected = batch_and_reference(rows, seed)
    assert choose_tokens(logits, sampled) == expected


def test_mixed_batch_samples_and_a_broken_row_changes_no_other_row():
    ok = SamplingParams(temperature=1.0, top_k=10, top_p=0.9)
    rows = [("normal", ok, i) for i in range(6)]
    logits, sampled, expected = batch_and_reference(rows, 11)
    got = choose_tokens(logits, sampled)
    assert got == expected
    assert len(set(got)) > 1  # positive twin: these rows really sample (not all argmax)
    broken = logits.clone()
    broken[2] = NAN  # one request's distribution goes bad ...
    again = choose_tokens(broken, sampled)
    assert again[:2] + again[3:] == got[:2] + got[3:]  # ... and nobody else's token changes
    assert again[2] == 0  # argmax of all -inf after NaN -> -inf: never raises


def test_bad_row_lists_are_refused():
    logits = torch.zeros(3, VOCAB)
    one = SampledRow(1, 1.0, 0, 1.0, 0.5)
    for bad in ([one, one], [SampledRow(3, 1.0, 0, 1.0, 0.5)], [SampledRow(-1, 1.0, 0, 1.0, 0.5)]):
        with pytest.raises(ConfigError):
            choose(logits, bad)
    with pytest.raises(ConfigError):
        choose(torch.zeros(VOCAB), [])
    assert choose_tokens(logits, [SampledRow(1, 1.0, 0, 1.0, 0.51)]) == [0, 20, 0]


def test_join_rows_reuses_the_runners_logits_without_a_copy():
    base = torch.randn(6, VOCAB)
    parts = list(torch.split(base, [1, 3, 2]))  # what the runner returns: views of one tensor
    joined = join_rows(parts)
    assert joined.data_ptr() == base.data_ptr()
    assert torch.equal(joined, base)
    gap = join_rows([parts[0], parts[2]])  # not adjacent (a share left out): copied
    assert gap.data_ptr() != base.data_ptr()
    assert torch.equal(gap, base[[0, 4, 5]])
    apart = join_rows([torch.ones(1, VOCAB), torch.zeros(2, VOCAB)])  # separate tensors
    assert torch.equal(apart, torch.cat([torch.ones(1, VOCAB), torch.zeros(2, VOCAB)]))


SYNC_METHODS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "cpu",
                "numpy")


class SyncCounter:
    """Counts the Tensor methods that copy a result to the host (while `active`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.active = True
        for name in SYNC_METHODS:
            real = getattr(torch.Tensor, name)

            def spy(t: torch.Tensor, *a: Any, _real: Any = real, _name: str = name,
                    **kw: Any) -> Any:
                if self.active:
                    self.calls.append(_name)
                return _real(t, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, spy)


def test_one_host_transfer_for_a_whole_mixed_batch(monkeypatch):
    rows = [("normal", SamplingParams(temperature=0.8, top_k=5, seed=1), 0),
            ("normal", SamplingParams(), 0), ("nan", SamplingParams(temperature=1.0), 3),
            ("normal", SamplingParams(temperature=1e-42, top_p=1e-50), 9)]
    logits, sampled, expected = batch_and_reference(rows, 3)
    counter = SyncCounter(monkeypatch)
    got = choose_tokens(logits, sampled)
    assert counter.calls == ["tolist"]
    assert got == expected
    counter.calls.clear()
    choose(logits, sampled)  # the device part alone: nothing comes back to the host
    assert counter.calls == []


def seeded_reference(prompt: Sequence[int], params: SamplingParams) -> list[int]:
    """Per-sequence sampling with the plain runner: whole prompt, then one token at a time."""
    assert params.seed is not None
    runner = tiny_runner(num_blocks=64, block_size=4)
    table = tuple(range(runner.num_blocks))
    toks = list(prompt)
    logits = runner.forward([ForwardChunk(tuple(toks), 0, table, 1)])[0]
    out = []
    for i in range(params.max_tokens):
        t = sample(logits[-1], params, seeded_uniform(params.seed, i))
        out.append(t)
        logits = runner.forward([ForwardChunk((t,), len(toks), table, 1)])[0]
        toks.append(t)
    return out


SEEDED = [61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71]
KW: dict[str, Any] = {"temperature": 0.9, "top_k": 60, "top_p": 0.95, "seed": 99}


def test_seeded_request_gives_the_same_tokens_whatever_shares_its_batch():
    alone_ref = seeded_reference(SEEDED, SamplingParams(max_tokens=14, **KW))

    async def go(company: bool) -> list[int]:
        eng = make_engine(cache=False, spec=True, budget=32)
        others = []
        if company:  # greedy, drafting, other seeds, a degenerate one: all in the same steps
            others = [eng.submit(req([5, 6, 7, 8] * 5, max_tokens=20), SALT_A),
                      eng.submit(req(SEEDED, max_tokens=9, temperature=1.3, seed=1), SALT_B),
                      eng.submit(req([9, 8, 7], max_tokens=12, temperature=1e-42), SALT_B),
                      eng.submit(req(SEEDED[:5], max_tokens=16), SALT_A)]
        mine = eng.submit(req(SEEDED, max_tokens=14, **KW), SALT_A)
        outs = await asyncio.gather(collect(mine), *(collect(s) for s in others))
        if company:
            assert tokens_of(outs[4]) == reference_greedy(SEEDED[:5], 16)
            assert eng.stats().draft_tokens > 0  # drafts really shared those steps
        await eng.close()
        return tokens_of(outs[0])

    alone, crowded = asyncio.run(go(False)), asyncio.run(go(True))
    assert alone == crowded == alone_ref
    assert alone != reference_greedy(SEEDED, 14)  # positive twin: it really sampled


class PausingRunner:
    """Stops the sync counter while the model runs (the runner is not the sampler's business)."""

    def __init__(self, real: Any, counter: SyncCounter) -> None:
        self.real, self.counter = real, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def forward(self, chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        self.counter.active = False
        try:
            return self.real.forward(chunks)  # type: ignore[no-any-return]
        finally:
            self.counter.active = True


def test_engine_step_brings_tokens_to_the_host_once(monkeypatch):
    counter = SyncCounter(monkeypatch)
    counter.active = False
    per_step: list[list[str]] = []

    async def go() -> None:
        eng = make_engine(cache=False, spec=True, budget=64)
        eng.runner = PausingRunner(eng.runner, counter)  # type: ignore[assignment]
        real_step = eng.step

        async def counted() -> None:
            counter.calls.clear()
            counter.active = True
            try:
                await real_step()
            finally:
                counter.active = False
            per_step.append(counter.calls.copy())

        eng.step = counted  # type: ignore[method-assign]
        streams = [eng.submit(req([5, 6, 7, 8] * 5, max_tokens=12), SALT_A),
                   eng.submit(req(SEEDED, max_tokens=12, **KW), SALT_A),
                   eng.submit(req(SEEDED[:5], max_tokens=16), SALT_B)]  # loops: drafts
        outs = await asyncio.gather(*(collect(s) for s in streams))
        assert eng.stats().accepted_drafts > 0  # drafts were verified in those steps too
        assert tokens_of(outs[2]) == reference_greedy(SEEDED[:5], 16)
        await eng.close()

    asyncio.run(go())
    assert len(per_step) >= 8
    assert all(calls == ["tolist"] for calls in per_step)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_cuda_choice_never_syncs_and_equals_the_cpu_reference():
    rows = [("normal", SamplingParams(temperature=0.8, top_k=5), 0),
            ("normal", SamplingParams(), 0), ("ties", SamplingParams(), 1),
            ("nan", SamplingParams(temperature=1.0, top_p=0.9), 3),
            ("normal", SamplingParams(temperature=1e-42, top_p=1e-50), 9)]
    logits, sampled, expected = batch_and_reference(rows, 5)
    cuda = logits.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ids = choose(cuda, sampled)  # raises if anything inside waits for the device
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ids.is_cuda
    assert ids.tolist() == expected
