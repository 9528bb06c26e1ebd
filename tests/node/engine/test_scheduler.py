"""Scheduler policy: budget, decode-first, chunked prefill, FCFS, preemption, cache-blind order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.engine.blocks import BlockManager
from node.engine.prefix_cache import PrefixCache, chain_root
from node.engine.scheduler import Scheduler, StepPlan
from node.engine.sequence import EngineLimits, SeqStatus, Sequence
from tests.node.engine.engine_fakes import FakePool

BS = 4
ROOT_A = chain_root(b"A" * 16)
ROOT_B = chain_root(b"B" * 16)


def make(
    num_blocks: int = 32, budget: int = 16, *, cache: bool = False, max_seqs: int = 8,
    drafts: int = 0,
) -> tuple[FakePool, Scheduler]:
    pool = FakePool(num_blocks, BS)
    bm = BlockManager(num_blocks, BS, pool.zero_blocks, PrefixCache(10.0) if cache else None)
    limits = EngineLimits(max_model_len=4096, max_tokens_cap=512, max_num_seqs=max_seqs,
                          max_num_batched_tokens=budget, max_draft_tokens=drafts)
    return pool, Scheduler(bm, limits)


def seq(n: int, root: bytes = ROOT_A, max_tokens: int = 8, base: int = 0) -> Sequence:
    toks = [base + i for i in range(n)]
    return Sequence(seq_id=random.getrandbits(64), root=root, token_ids=toks,
                    num_prompt_tokens=n, max_tokens=max_tokens)


def run_step(pool: FakePool, sched: Scheduler, now: float = 0.0, token: int = 1) -> StepPlan:
    plan = sched.schedule(now)
    pool.write(plan)
    for share in plan.scheduled:
        s = share.seq
        sched.complete(share, [token] if share.samples else [], now)
        if s.status is SeqStatus.RUNNING and s.num_generated >= s.max_tokens:
            sched.finish(s, now)
    sched.flush()
    return plan


def test_chunked_prefill_under_budget_then_decode() -> None:
    pool, sched = make(budget=8)
    s = seq(20)
    sched.add(s)
    plans = [run_step(pool, sched) for _ in range(3)]
    assert [(p.scheduled[0].start, p.scheduled[0].num_tokens) for p in plans] == [
        (0, 8), (8, 8), (16, 4)]
    assert [p.chunks[0].num_logits for p in plans] == [0, 0, 1]
    assert s.num_generated == 1
    assert s.num_computed == 20
    p = run_step(pool, sched)
    assert p.chunks[0].token_ids == (1,)
    assert p.chunks[0].start_pos == 20


def test_decodes_first_then_prefill_fills_budget_fcfs() -> None:
    pool, sched = make(budget=10)
    a, b, c = seq(3), seq(30, base=100), seq(5, base=200)
    for s in (a, b, c):
        sched.add(s)
    p1 = run_step(pool, sched)
    assert [(x.seq, x.num_tokens) for x in p1.scheduled] == [(a, 3), (b, 7)]
    p2 = run_step(pool, sched)  # a decodes first, b's prefill takes the rest, c waits (FCFS)
    assert [(x.seq, x.num_tokens) for x in p2.scheduled] == [(a, 1), (b, 9)]
    assert c.status is SeqStatus.WAITING
    assert sum(x.num_tokens for x in p2.scheduled) <= 10


def test_admission_blocked_by_head_of_queue_no_overtaking() -> None:
    pool, sched = make(num_blocks=8, budget=64)
    big, huge, small = seq(16, max_tokens=4), seq(20, max_tokens=4), seq(2, max_tokens=4)
    for s in (big, huge, small):
        sched.add(s)
    run_step(pool, sched)
    assert big.status is SeqStatus.RUNNING
    assert huge.status is SeqStatus.WAITING
    assert small.status is SeqStatus.WAITING
    for _ in range(10):
        run_step(pool, sched)
    assert huge.status is not SeqStatus.WAITING


def test_preemption_takes_newest_and_requeues_it_first_then_recomputes() -> None:
    pool, sched = make(num_blocks=4, budget=64)
    old, new = seq(8, max_tokens=8, base=0), seq(7, max_tokens=8, base=50)
    sched.add(old)
    sched.add(new)
    run_step(pool, sched)  # both admitted: 2 + 2 blocks, pool full
    assert old.status is SeqStatus.RUNNING
    assert new.status is SeqStatus.RUNNING
    new_blocks = list(new.block_table)
    plan = run_step(pool, sched)  # old needs a 3rd block: new is preempted
    assert plan.num_preempted == 1
    assert new.status is SeqStatus.WAITING  # type: ignore[comparison-overlap]
    assert sched.waiting[0] is new
    assert new.num_computed == 0
    assert not new.block_table
    assert new.token_ids[:7] == list(range(50, 57))
    assert new.num_generated == 1
    assert all(pool.is_zero(b) for b in new_blocks if b not in old.block_table)
    while old.status is SeqStatus.RUNNING:
        run_step(pool, sched)
    run_step(pool, sched)
    assert new.status is SeqStatus.RUNNING
    assert new.num_computed == 8


def test_no_starvation_under_steady_arrivals() -> None:
    pool, sched = make(num_blocks=10, budget=16, max_seqs=4)
    rng = random.Random(1)
    first = seq(30, max_tokens=6)
    sched.add(first)
    for i in range(60):
        if i % 2 == 0:
            sched.add(seq(rng.randint(1, 12), max_tokens=rng.randint(1, 6), base=1000 + i))
        run_step(pool, sched, now=float(i))
        if first.status is SeqStatus.FINISHED:
            break
    assert first.status is SeqStatus.FINISHED


def test_cache_hits_do_not_change_the_schedule_but_save_compute() -> None:
    """Ordering and batch composition are the same with the cache on or off (DESIGN.md)."""
    def trace(cache: bool) -> tuple[list[list[tuple[int, int, int]]], int, int]:
        pool, sched = make(num_blocks=24, budget=12, cache=cache)
        prompts = [(ROOT_A, 17), (ROOT_B, 9), (ROOT_A, 21), (ROOT_B, 13), (ROOT_A, 17)]
        out, fed, t = [], 0, 0.0
        for root, n in prompts:
            sched.add(seq(n, root=root, max_tokens=3))
            for _ in range(4):
                plan = run_step(pool, sched, now=t)
                t += 1.0
                out.append([(x.seq.arrival, x.start, x.num_tokens) for x in plan.scheduled])
                fed += sum(len(c.token_ids) for c in plan.chunks)
        while sched.has_work:
            plan = run_step(pool, sched, now=t)
            out.append([(x.seq.arrival, x.start, x.num_tokens) for x in plan.scheduled])
            fed += sum(len(c.token_ids) for c in plan.chunks)
        return out, fed, sched.blocks.cache.hits if sched.blocks.cache else 0

    off, fed_off, _ = trace(cache=False)
    on, fed_on, hits = trace(cache=True)
    assert on == off
    assert hits > 0
    assert fed_on < fed_off


def test_tenant_b_gets_no_hit_on_a_prefix_and_a_does() -> None:
    pool, sched = make(num_blocks=32, budget=64, cache=True)
    a1 = seq(13, root=ROOT_A, max_tokens=1)
    sched.add(a1)
    run_step(pool, sched)
    assert a1.status is SeqStatus.FINISHED
    b = seq(13, root=ROOT_B, max_tokens=1)
    sched.add(b)
    plan = run_step(pool, sched)
    assert b.status is SeqStatus.FINISHED
    assert plan.chunks[0].start_pos == 0
    a2 = seq(13, root=ROOT_A, max_tokens=1)
    sched.add(a2)
    plan = run_step(pool, sched)
    assert plan.chunks[0].start_pos == 12  # A: 3 cached blocks of its own, only the rest computed


def test_drafts_are_verified_within_budget_and_trimmed() -> None:
    pool, sched = make(num_blocks=16, budget=16, drafts=4)
    s = seq(4, max_tokens=20)
    sched.add(s)
    run_step(pool, sched)
    s.draft_tokens = [5, 6, 7, 8, 9, 10]
    plan = sched.schedule(0.0)
    (share,) = plan.scheduled
    assert share.num_drafts == 4
    assert share.chunk is not None
    assert share.chunk.token_ids == (1, 5, 6, 7, 8)
    assert share.chunk.num_logits == 5
    assert len(s.block_table) == 3
    pool.write(plan)
    sched.complete(share, [5, 42], 0.0)  # one draft accepted + the model's token
    assert s.token_ids[-3:] == [1, 5, 42]
    assert s.num_computed == s.num_tokens - 1
    assert len(s.block_table) == 2
    assert sched.reserved == 2


def test_finish_and_cancel_erase_content() -> None:
    pool, sched = make()
    running, waiting = seq(6), seq(6)
    sched.add(running)
    run_step(pool, sched)
    sched.add(waiting)
    blocks = list(running.block_table)
    sched.finish(running, 0.0)
    sched.finish(waiting, 0.0)
    sched.flush()
    for s in (running, waiting):
        assert s.status is SeqStatus.FINISHED
        assert not s.token_ids
        assert not s.root
    assert all(pool.is_zero(b) for b in blocks)
    assert not sched.has_work


workloads = st.lists(
    st.tuples(st.sampled_from([ROOT_A, ROOT_B]), st.integers(0, 2), st.integers(1, 20),
              st.integers(1, 10), st.integers(0, 6)),
    min_size=1, max_size=10)


@settings(max_examples=60, deadline=None)
@given(workloads, st.integers(6, 30), st.integers(4, 24))
def test_schedule_is_identical_with_cache_on_or_off(
    jobs: list[tuple[bytes, int, int, int, int]], num_blocks: int, budget: int,
) -> None:
    """Property form of the DESIGN.md rule: the cache never changes ordering or batches."""
    def trace(cache: bool) -> tuple[list[tuple[list[tuple[int, int, int]], int]], int]:
        pool, sched = make(num_blocks=num_blocks, budget=budget, cache=cache)
        out, t = [], 0
        pending = sorted(jobs, key=lambda j: j[4])
        while pending or sched.has_work:
            while pending and pending[0][4] <= t:
                root, prefix, tail, max_tokens, _ = pending.pop(0)
                toks = [400 + prefix] * 8 + list(range(tail))
                toks = toks[: num_blocks * BS - max_tokens]
                s = Sequence(seq_id=0, root=root, token_ids=toks, num_prompt_tokens=len(toks),
                             max_tokens=max_tokens)
                sched.add(s)
            plan = run_step(pool, sched, now=float(t))
            out.append(([(x.seq.arrival, x.start, x.num_tokens) for x in plan.scheduled],
                        plan.num_preempted))
            t += 1
        return out, sched.blocks.cache.hits if sched.blocks.cache else 0

    off, _ = trace(cache=False)
    on, _ = trace(cache=True)
    assert on == off
