"""E7: the scheduler + block manager as a hypothesis state machine over a fake KV pool.

Rules: add / step / finish / cancel / preempt / advance the clock / flush the cache.
Invariants after every rule: every block is in exactly one state (free xor owned xor cached);
refcount == number of live block tables holding the block (so >= 0); no block in two tenants'
tables; finished => erased and freed; freed => zero; logical reservation == sum of table lengths
<= pool; and every computed position's KV slot holds exactly that sequence's token (so a prefix
hit never serves another tenant's or another prompt's KV).
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from node.engine.blocks import BlockManager, BlockState
from node.engine.prefix_cache import PrefixCache, chain_root
from node.engine.scheduler import Scheduler
from node.engine.sequence import EngineLimits, SeqStatus, Sequence, blocks_for
from tests.node.engine.engine_fakes import FakePool

BS = 4
TENANTS = [chain_root(bytes([i]) * 16) for i in range(2)]


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(
        num_blocks=st.integers(6, 14),
        cache=st.booleans(),
        budget=st.integers(8, 40),
        drafts=st.integers(0, 3),
    )
    def setup(self, num_blocks: int, cache: bool, budget: int, drafts: int) -> None:
        self.now = 0.0
        self.pool = FakePool(num_blocks, BS)
        self.cache = PrefixCache(ttl=5.0) if cache else None
        self.bm = BlockManager(num_blocks, BS, self.pool.zero_blocks, self.cache)
        limits = EngineLimits(max_model_len=num_blocks * BS, max_tokens_cap=64, max_num_seqs=6,
                              max_num_batched_tokens=budget, max_draft_tokens=drafts)
        self.sched = Scheduler(self.bm, limits)
        self.live: list[Sequence] = []
        self.done: list[Sequence] = []
        self.rng = random.Random(0)

    @rule(tenant=st.sampled_from(TENANTS), prefix=st.integers(0, 1),
          tail=st.lists(st.integers(1, 50), min_size=0, max_size=10), max_tokens=st.integers(1, 24))
    def add(self, tenant: bytes, prefix: int, tail: list[int], max_tokens: int) -> None:
        shared = [100 + prefix] * (2 * BS)  # common prefixes make cache hits likely
        prompt = (shared + tail)[: max(1, len(shared) + len(tail))]
        if blocks_for(len(prompt) + max_tokens, BS) > self.bm.num_blocks:
            prompt = prompt[: self.bm.num_blocks * BS - max_tokens]
        seq = Sequence(seq_id=self.rng.getrandbits(64), root=tenant, token_ids=list(prompt),
                       num_prompt_tokens=len(prompt), max_tokens=max_tokens)
        self.sched.add(seq)
        self.live.append(seq)

    @rule(accept=st.integers(0, 3))
    def step(self, accept: int) -> None:
        plan = self.sched.schedule(self.now)
        seen = [s.seq for s in plan.scheduled]
        assert len(seen) == len(set(map(id, seen))), "a sequence scheduled twice in one step"
        assert sum(s.num_tokens for s in plan.scheduled) <= self.sched.limits.max_num_batched_tokens
        self.pool.write(plan)
        for share in plan.scheduled:
            seq = share.seq
            new: list[int] = []
            if share.samples:
                new = [*seq.draft_tokens[: min(accept, share.num_drafts)], 7]
                new = new[: seq.max_tokens - seq.num_generated]
            self.sched.complete(share, new, self.now)
            if seq.status is SeqStatus.RUNNING and seq.num_generated >= seq.max_tokens:
                self._finish(seq)
            elif seq.status is SeqStatus.RUNNING and not seq.is_prefilling:
                seq.draft_tokens = [self.rng.randint(1, 9) for _ in range(3)]
        self.sched.flush()
        self.now += 1.0

    def _finish(self, seq: Sequence) -> None:
        self.sched.finish(seq, self.now)
        self.live.remove(seq)
        self.done.append(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self._finish(data.draw(st.sampled_from(self.live)))
        self.sched.flush()

    @precondition(lambda self: self.sched.running)
    @rule(data=st.data())
    def preempt(self, data: st.DataObject) -> None:
        self.sched.preempt(data.draw(st.sampled_from(self.sched.running)), self.now)
        self.sched.flush()

    @rule(dt=st.floats(0.0, 10.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.bm.expire(self.now)
        self.bm.flush()

    @rule()
    def drop_cache(self) -> None:
        self.bm.drop_cache()
        self.bm.flush()

    @invariant()
    def blocks_partitioned_and_counted(self) -> None:
        holders: dict[int, set[bytes]] = {}
        counts = [0] * self.bm.num_blocks
        for seq in self.sched.running:
            for b in seq.block_table:
                counts[b] += 1
                holders.setdefault(b, set()).add(seq.root)
        for b in range(self.bm.num_blocks):
            assert self.bm.refcount(b) >= 0
            assert self.bm.refcount(b) == counts[b]
            state = self.bm.state(b)
            assert (state is BlockState.IN_USE) == (counts[b] > 0)
            assert state is not BlockState.DIRTY  # every rule ends with a flush
            if state is BlockState.FREE:
                assert self.pool.is_zero(b), "a free block is not zero"
        assert all(len(t) == 1 for t in holders.values()), "a block in two tenants' tables"
        assert self.sched.reserved == sum(len(s.block_table) for s in self.sched.running)
        assert self.sched.reserved <= self.bm.num_blocks

    @invariant()
    def finished_are_erased(self) -> None:
        for seq in self.done:
            assert seq.status is SeqStatus.FINISHED
            assert not seq.token_ids
            assert not seq.block_table
            assert not seq.block_hashes
        for seq in self.sched.waiting:
            assert not seq.block_table

    @invariant()
    def kv_matches_own_tokens(self) -> None:
        for seq in self.sched.running:
            for p in range(seq.num_computed):
                slot = self.pool.slots[seq.block_table[p // BS]][p % BS]
                assert slot == (seq.root, seq.token_ids[p])

    def teardown(self) -> None:
        if not hasattr(self, "sched"):
            return
        for seq in list(self.live):
            self._finish(seq)
        self.bm.drop_cache()
        self.sched.flush()
        assert all(self.pool.is_zero(b) for b in range(self.bm.num_blocks))
        assert self.bm.num_free == self.bm.num_blocks


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
