"""Overlap (`overlap.py`): forward n+1 runs while step n's tail does text; same outputs either way,
never a zeroing while a forward is in flight, nothing left in the pool once idle."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import TYPE_CHECKING, Any, cast

import pytest
import torch

from hushcc.errors import ConfigError
from node.engine.engine import EngineError
from node.engine.overlap import Settled, resolve_overlap, settle
from node.engine.runner import PagedRunner, tiny_runner
from node.engine.sampler import pick_step
from tests.node.engine.engine_fakes import ToyTokenizer
from tests.node.engine.engine_helpers import (
    SALT_A,
    SALT_B,
    TinyEngine,
    collect,
    make_engine,
    reference_greedy,
    req,
    tokens_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from node.engine.batch import ForwardChunk, ModelRunner
    from node.engine.requests import Delta, GenerateRequest
    from node.engine.sampler import Picks, RowsWanted

P1 = [random.Random(5).randrange(3, 500) for _ in range(23)]
P2 = [random.Random(8).randrange(3, 500) for _ in range(17)]
P3 = [5, 6, 7, 8, 9] * 6  # repetitive: prompt lookup drafts


class Recorder:
    """A runner wrapper that counts forwards in flight and records each `zero_blocks` call.

    A forward is in flight from the moment the engine takes `forward` to launch it until it
    returns in its worker thread. `hold[n]` makes the n-th forward wait for that event first.
    """

    def __init__(self, inner: PagedRunner, hold: dict[int, threading.Event] | None = None
                 ) -> None:
        self.inner = inner
        self.device = inner.device
        self.block_size = inner.block_size
        self.num_blocks = inner.num_blocks
        self.hold = hold or {}
        self.in_flight = 0
        self.launched = 0
        self.zeroed: list[tuple[int, list[int]]] = []  # (forwards in flight, blocks)
        self.on_zero = threading.Event()
        self._lock = threading.Lock()

    @property
    def forward(self) -> Callable[[Sequence[ForwardChunk]], list[torch.Tensor]]:
        with self._lock:
            self.in_flight += 1
            self.launched += 1
            n = self.launched

        def run(chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
            try:
                if (event := self.hold.get(n)) is not None:
                    assert event.wait(10), "held forward never released"
                return self.inner.forward(chunks)
            finally:
                with self._lock:
                    self.in_flight -= 1
        return run

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        self.zeroed.append((self.in_flight, list(block_ids)))
        self.inner.zero_blocks(block_ids)
        self.on_zero.set()

    def clear_scratch(self) -> None:
        self.inner.clear_scratch()

    def kv_pool_is_zero(self, block_ids: Sequence[int] | None = None) -> bool:
        return self.inner.kv_pool_is_zero(block_ids)


def recorded(overlap: bool, hold: dict[int, threading.Event] | None = None,
             tokenizer: ToyTokenizer | None = None, **kw: Any) -> tuple[TinyEngine, Recorder]:
    rec = Recorder(tiny_runner(num_blocks=kw.pop("num_blocks", 64), block_size=4), hold)
    eng = make_engine(runner=cast("ModelRunner", rec), overlap=overlap, tokenizer=tokenizer,
                      **kw)
    return eng, rec


async def until_idle(eng: TinyEngine) -> None:
    for _ in range(5000):
        if eng.idle:
            return
        await asyncio.sleep(0.001)
    pytest.fail("engine did not go idle")


def words_until(ref: Sequence[int], stop: str) -> int:
    """How many tokens of the toy text it takes for `stop` to appear."""
    return next(n for n in range(len(ref) + 1) if stop in "".join(f"w{t} " for t in ref[:n]))


# --- the pure part -------------------------------------------------------------------------


def test_settle_accepts_drafts_then_cuts_at_max_tokens_and_after_eos() -> None:
    kw: dict[str, Any] = {"generated": 0, "max_tokens": 10, "eos": {99}, "ignore_eos": False}
    assert settle([], [7], **kw) == Settled((7,), 0, (7,), None)
    assert settle([1, 2, 3], [1, 2, 4, 5], **kw) == Settled((1, 2, 4), 2, (1, 2, 4), None)
    assert settle([1, 2], [1, 2, 3], **kw | {"generated": 8}) == Settled((1, 2), 2, (1, 2, 3),
                                                                         "length")
    assert settle([1, 99], [1, 99, 3], **kw) == Settled((1, 99), 2, (1, 99, 3), "stop")
    assert settle([], [99], **kw | {"ignore_eos": True}) == Settled((99,), 0, (99,), None)
    assert settle([], [99], **kw | {"generated": 9, "ignore_eos": True}).end == "length"
    assert settle([], [99], **kw | {"generated": 9}).end == "stop"  # EOS wins over length
    with pytest.raises(ConfigError):
        settle([1, 2], [1], **kw)


def test_overlap_defaults_on_for_cuda_only_unless_set() -> None:
    assert resolve_overlap(setting=None, device_type="cuda")
    assert not resolve_overlap(setting=None, device_type="cpu")
    assert not resolve_overlap(setting=None, device_type=None)
    assert resolve_overlap(setting=True, device_type="cpu")
    assert not resolve_overlap(setting=False, device_type="cuda")
    assert not make_engine().overlap  # a CPU runner
    assert make_engine(overlap=True).overlap


# --- same outputs, overlap on and off ------------------------------------------------------

REF1 = reference_greedy(P1, 16)
REF2 = reference_greedy(P2, 16)
STOP = f"w{REF1[6]} w{REF1[7]}"
EOS = REF2[5]


def workload() -> list[GenerateRequest]:
    return [
        req(P1, max_tokens=16),  # length
        req(P2, max_tokens=12, temperature=1.2, top_k=40, top_p=0.9, seed=3),  # seeded
        req(P1, max_tokens=16, stop=(STOP,)),  # a stop string, found in a tail
        req(P3, max_tokens=20),  # prompt lookup
        req(P2, max_tokens=16, ignore_eos=False),  # EOS
        req(P3[:7] + P1[:9], max_tokens=14, temperature=0.8, seed=11, stop=("w4",)),
    ]


def run_workload(overlap: bool, **kw: Any) -> tuple[list[list[Delta]], Recorder, Any]:
    async def go() -> tuple[list[list[Delta]], Recorder, Any]:
        eng, rec = recorded(overlap, spec=True, eos=[EOS], **kw)
        streams = [eng.submit(r, (SALT_A, SALT_B)[i % 2]) for i, r in enumerate(workload())]
        outs = await asyncio.gather(*(collect(s) for s in streams))
        await until_idle(eng)
        # once idle the pool is all zero, but for the prefix cache's blocks (until their TTL)
        assert rec.kv_pool_is_zero() != kw["cache"], "KV residue once idle"
        stats = eng.stats()
        await eng.close()
        assert rec.kv_pool_is_zero()
        return list(outs), rec, stats
    return asyncio.run(go())


@pytest.mark.parametrize("pool", [64, 20], ids=["roomy", "preempting"])
def test_overlap_gives_the_same_deltas_token_for_token(pool: int) -> None:
    kw = {"num_blocks": pool, "budget": 24, "cache": pool == 20}
    off, rec_off, st_off = run_workload(False, **kw)
    on, rec_on, st_on = run_workload(True, **kw)
    assert on == off
    # positive twins: the workload ends every way, and really speculates (and preempts)
    reasons = [o[-1].finish_reason for o in off]
    assert reasons[0] == reasons[3] == "length"
    assert reasons[2] == reasons[4] == "stop"
    assert tokens_of(off[0]) == REF1
    assert tokens_of(off[4]) == REF2[:5]
    assert off[2][-1].completion_tokens == words_until(REF1, STOP)
    assert st_on.draft_tokens > 0
    if pool == 20:
        assert st_on.preemptions > 0
        assert st_off.preemptions > 0
    for rec in (rec_on, rec_off):
        assert rec.zeroed
        assert all(flight == 0 for flight, _ in rec.zeroed), "zeroed while a forward ran"


# --- a stop found late: its row is wasted, its blocks wait for the forward ------------------


def test_late_stop_blocks_are_zeroed_only_after_the_forward_writing_them() -> None:
    k = words_until(REF1, STOP)  # the stop string is complete after k tokens

    async def go(overlap: bool) -> tuple[Recorder, list[Delta]]:
        eng, rec = recorded(overlap, cache=False)
        out = await collect(eng.submit(req(P1, max_tokens=16, stop=(STOP,)), SALT_A))
        assert rec.kv_pool_is_zero(), "a stream ended with its blocks not zeroed"
        await until_idle(eng)
        await eng.close()
        return rec, out

    rec_on, out_on = asyncio.run(go(overlap=True))
    rec_off, out_off = asyncio.run(go(overlap=False))
    assert out_on == out_off
    assert out_on[-1].finish_reason == "stop"
    assert rec_off.launched == k  # prefill + k - 1 decodes
    assert rec_on.launched == k + 1  # ... + the decode launched before the stop was found
    assert rec_on.zeroed
    assert all(flight == 0 for flight, _ in rec_on.zeroed)


def test_zeroing_during_the_forward_would_leave_residue() -> None:
    """Positive twin of the guard: zero while forward k+1 runs, and its row's K/V stays."""
    k = words_until(REF1, STOP)

    class Unguarded(TinyEngine):
        def _flush(self) -> None:  # ignores the forward in flight
            inflight, self._inflight = self._inflight, None
            try:
                super()._flush()
            finally:
                self._inflight = inflight

    async def go() -> Recorder:
        hold = threading.Event()
        rec = Recorder(tiny_runner(num_blocks=64, block_size=4), {k + 1: hold})
        rec.on_zero = hold  # forward k+1 computes only once a zeroing has happened
        base = make_engine(runner=cast("ModelRunner", rec), overlap=True, cache=False)
        eng = Unguarded(base.runner, ToyTokenizer(), base.config)
        await collect(eng.submit(req(P1, max_tokens=16, stop=(STOP,)), SALT_A))
        await until_idle(eng)
        await eng.close()
        return rec

    rec = asyncio.run(go())
    assert any(flight == 1 for flight, _ in rec.zeroed)
    assert not rec.kv_pool_is_zero(), "the wasted row's K/V landed in a zeroed, free block"


# --- the steps really overlap --------------------------------------------------------------


class WatchingTokenizer(ToyTokenizer):
    """Records how many forwards were in flight at its first decode, then releases forward 2."""

    def __init__(self, rec: Recorder, release: threading.Event) -> None:
        self.rec, self.release = rec, release
        self.seen: list[int] = []

    def decode(self, token_ids: list[int], **kwargs: object) -> str:
        if not self.seen:
            self.seen.append(self.rec.in_flight)
            self.release.set()
        return super().decode(token_ids, **kwargs)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "sequential"])
def test_tail_of_step_n_runs_while_forward_n_plus_1_is_in_flight(overlap: bool) -> None:
    async def go() -> list[int]:
        release = threading.Event()
        rec = Recorder(tiny_runner(num_blocks=64, block_size=4), {2: release})
        tok = WatchingTokenizer(rec, release)
        eng = make_engine(runner=cast("ModelRunner", rec), overlap=overlap, tokenizer=tok)
        out = await collect(eng.submit(req(P1, max_tokens=6), SALT_A))
        assert tokens_of(out) == REF1[:6]
        await eng.close()
        return tok.seen

    # forward 2 (the first decode) waits for the first decode of text, the prefill's tail
    assert asyncio.run(go()) == ([1] if overlap else [0])


def test_sampling_waits_for_the_device_in_the_worker_not_on_the_event_loop() -> None:
    on_loop: list[bool] = []

    class Watched(TinyEngine):
        @staticmethod
        def pick_step(outs: Sequence[torch.Tensor | None], wants: Sequence[RowsWanted | None]
                      ) -> Picks:
            on_loop.append(threading.current_thread() is threading.main_thread())
            return pick_step(outs, wants)

    async def go() -> list[Delta]:
        base = make_engine(overlap=True)
        eng = Watched(base.runner, ToyTokenizer(), base.config)
        out = await collect(eng.submit(req(P1, max_tokens=6), SALT_A))
        await eng.close()
        return out

    assert tokens_of(asyncio.run(go())) == REF1[:6]
    assert on_loop  # positive twin: the watched call is the one the engine makes
    assert not any(on_loop)


# --- cancellation and a failing tail mid-overlap -------------------------------------------


def test_cancel_mid_overlap_erases_within_one_step_and_spares_the_others() -> None:
    async def go() -> None:
        eng, rec = recorded(True, cache=False)
        a = eng.submit(req(P1, max_tokens=100), SALT_A)
        b = asyncio.create_task(collect(eng.submit(req(P2, max_tokens=12), SALT_B)))
        await anext(a)
        await anext(a)
        steps = eng.stats().steps
        eng.cancel(a.request_id)
        rest = await collect(a)
        assert rest[-1].finish_reason == "cancelled"
        assert eng.stats().steps - steps <= 1
        assert tokens_of(await b) == REF2[:12]
        await until_idle(eng)
        assert rec.kv_pool_is_zero()
        assert all(flight == 0 for flight, _ in rec.zeroed)
        assert eng.stats().cancelled == 1
        await eng.close()
    asyncio.run(go())


def test_a_failing_tail_ends_only_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from node.engine.sampling import find_stop  # noqa: PLC0415

    checks: list[int] = []

    def poisoned(text: str, stop: tuple[str, ...]) -> int:
        if "poison" in stop:
            checks.append(1)
            if len(checks) == 3:  # the third token's tail, with forward 4 in flight
                raise RuntimeError("stop check blew up")
        return find_stop(text, stop)

    monkeypatch.setattr("node.engine.live.find_stop", poisoned)

    async def go() -> None:
        eng, rec = recorded(True, cache=False)
        bad = eng.submit(req(P2, max_tokens=12, stop=("poison",)), SALT_B)
        good = eng.submit(req(P1, max_tokens=12), SALT_A)
        with pytest.raises(EngineError) as info:
            await collect(bad)
        assert "blew" not in str(info.value)
        assert tokens_of(await collect(good)) == REF1[:12]
        await until_idle(eng)
        assert rec.kv_pool_is_zero()
        assert all(flight == 0 for flight, _ in rec.zeroed)
        assert (eng.stats().failed, eng.stats().completed) == (1, 1)
        assert len(checks) == 3
        await eng.close()
    asyncio.run(go())


# --- decode graphs (static buffers and the trash block; captured on CUDA) ------------------


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (none here)")]),
])
def test_overlap_over_decode_graphs_same_deltas_and_pool_zero(device: str) -> None:
    from node.engine.model import ModelConfig, random_weights, tiny_hf_config  # noqa: PLC0415

    weights = random_weights(ModelConfig.from_hf(tiny_hf_config()), 0)

    def outputs(overlap: bool | None) -> list[list[Delta]]:
        async def go() -> list[list[Delta]]:
            runner = PagedRunner(weights, num_blocks=64, block_size=16, device=device,
                                 dtype=torch.float32, cuda_graphs=True)
            eng = make_engine(runner=runner, overlap=overlap, eos=[EOS], cache=False)
            assert eng.overlap == (overlap if overlap is not None else device == "cuda")
            streams = [eng.submit(r, SALT_A) for r in workload()]
            outs = await asyncio.gather(*(collect(s) for s in streams))
            await until_idle(eng)
            assert runner.kv_pool_is_zero(list(range(64)))
            await eng.close()
            assert runner.kv_pool_is_zero()  # the trash block too
            return list(outs)
        return asyncio.run(go())

    on = outputs(None if device == "cuda" else True)  # on CUDA, on by default
    assert on == outputs(False)
    assert {o[-1].finish_reason for o in on} == {"length", "stop"}
