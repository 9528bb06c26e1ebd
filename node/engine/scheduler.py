"""Continuous-batching scheduler: chunked prefill + decode under a per-step token budget.

Pure Python (no torch, no clock: `now` is an argument). Each `schedule` call returns the step's
plan as `ForwardChunk`s for the model runner; `complete` records what the step produced; `finish`
and `preempt` release a sequence's blocks (zeroed by the block manager before reuse).

Policy, in order, each step:
1. Decodes of running sequences, oldest first (1 token + the sequence's own speculative drafts).
   A decode that needs a new block when the pool is full preempts the *newest* running sequence
   (recompute: its blocks are released, its token ids kept, it goes back to the *front* of the
   waiting queue) -- never swap, never disk.
2. Chunks of running sequences still prefilling, oldest first, filling the remaining budget.
3. Admission, strictly FCFS: the head of the waiting queue is admitted when the blocks for all
   its known tokens fit; otherwise nothing behind it is admitted (no starvation: the oldest
   sequence is never preempted by a newer one, and `check_request` guarantees one sequence alone
   always fits). No admission in a step that preempted.

Statelessness rule (DESIGN.md: ordering and batch composition never depend on other tenants'
prefix-cache hits): every decision above uses only *logical* quantities -- arrival order, token
counts, logical progress `num_computed`, and logical block reservations (one per block-table
entry, shared or not). A cache hit only changes which physical blocks back a sequence and which
tokens the runner actually computes (chunks skip the cached prefix; a chunk wholly cached is
not sent at all); the token budget is charged as if there were no hit. So the plan's sequence
of (sequence, start, length) is identical with the cache on or off (tested).

Invariants: sum of block-table lengths of running sequences == `reserved` <= num_blocks;
waiting sequences own no blocks; finished sequences are erased.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.engine.batch import ForwardChunk
from node.engine.prefix_cache import extend_chain
from node.engine.sequence import SeqStatus, blocks_for

if TYPE_CHECKING:
    from collections.abc import Sequence as Seq

    from node.engine.blocks import BlockManager
    from node.engine.sequence import EngineLimits, Sequence


@dataclass(frozen=True, slots=True)
class ScheduledSeq:
    """One sequence's share of a step.

    Attributes:
        seq: the sequence.
        start: logical position of the first token of this share.
        num_tokens: tokens charged to the budget (logical, cache hits included; drafts included).
        num_drafts: speculative draft tokens verified in this share.
        chunk: what the runner computes, or None when the prefix cache already holds all of it.
    """

    seq: Sequence
    start: int
    num_tokens: int
    num_drafts: int
    chunk: ForwardChunk | None

    @property
    def samples(self) -> bool:
        """True when this share ends at the sequence's last known token (logits are sampled)."""
        return self.start + self.num_tokens - self.num_drafts >= self.seq.num_tokens


@dataclass(frozen=True, slots=True)
class StepPlan:
    """The scheduler's decision for one step."""

    scheduled: tuple[ScheduledSeq, ...]
    num_preempted: int

    @property
    def chunks(self) -> list[ForwardChunk]:
        """The runner's input: every share that has tokens to compute."""
        return [s.chunk for s in self.scheduled if s.chunk is not None]


class Scheduler:
    """FCFS continuous batching over a `BlockManager` (see the module docstring)."""

    __slots__ = ("_arrivals", "blocks", "limits", "num_preemptions", "reserved", "running",
                 "waiting")

    def __init__(self, blocks: BlockManager, limits: EngineLimits) -> None:
        """Create an idle scheduler."""
        self.blocks = blocks
        self.limits = limits
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.reserved = 0
        self.num_preemptions = 0
        self._arrivals = 0

    @property
    def has_work(self) -> bool:
        """True while any sequence is waiting or running."""
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence at the back (it must have passed `check_request`)."""
        self._arrivals += 1
        seq.arrival = self._arrivals
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def schedule(self, now: float) -> StepPlan:
        """Plan one step (see the module docstring for the policy)."""
        self.blocks.expire(now)
        plan: list[ScheduledSeq] = []
        before = self.num_preemptions
        budget = self._plan_decodes(plan, self.limits.max_num_batched_tokens, now)
        budget = self._plan_prefills(plan, budget)
        if self.num_preemptions == before:
            self._plan_admissions(plan, budget)
        return StepPlan(tuple(plan), self.num_preemptions - before)

    def _plan_decodes(self, plan: list[ScheduledSeq], budget: int, now: float) -> int:
        """(1) decodes, oldest first; returns the budget left."""
        for seq in list(self.running):
            if budget < 1:
                break
            if seq.status is not SeqStatus.RUNNING or seq.is_prefilling:
                continue
            room = min(budget - 1, self.limits.max_draft_tokens,
                       seq.max_tokens - seq.num_generated - 1)
            drafts = seq.draft_tokens[: max(room, 0)]
            upto = seq.num_computed + 1 + len(drafts)
            if blocks_for(upto, self.blocks.block_size) - len(seq.block_table) > (
                self.blocks.num_blocks - self.reserved
            ):
                drafts = []  # drafts never cause a preemption
            if not self._grow(seq, seq.num_computed + 1 + len(drafts), now):
                continue
            plan.append(self._share(seq, seq.num_computed, 1 + len(drafts), drafts))
            budget -= 1 + len(drafts)
        return budget

    def _plan_prefills(self, plan: list[ScheduledSeq], budget: int) -> int:
        """(2) chunks of admitted prefills, oldest first; returns the budget left."""
        for seq in self.running:
            if budget < 1:
                break
            if seq.is_prefilling:
                n = min(seq.num_tokens - seq.num_computed, budget)
                plan.append(self._share(seq, seq.num_computed, n, []))
                budget -= n
        return budget

    def _plan_admissions(self, plan: list[ScheduledSeq], budget: int) -> None:
        """(3) strict FCFS admission from the head of the waiting queue."""
        while self.waiting and budget > 0 and len(self.running) < self.limits.max_num_seqs:
            seq = self.waiting[0]
            need = blocks_for(seq.num_tokens, self.blocks.block_size)
            if self.reserved + need > self.blocks.num_blocks:
                break
            self.waiting.popleft()
            self._admit(seq, need)
            n = min(seq.num_tokens, budget)
            plan.append(self._share(seq, 0, n, []))
            budget -= n

    def complete(self, share: ScheduledSeq, new_tokens: Seq[int], now: float) -> None:
        """Record a computed share: advance progress, append sampled tokens, cache full blocks.

        Args:
            share: the share from this step's plan.
            new_tokens: tokens accepted this step (accepted drafts then the sampled token), or
                empty for a prefill chunk that does not end the known tokens.
            now: the current time (for blocks released by trimming).
        """
        seq = share.seq
        if seq.status is not SeqStatus.RUNNING:
            return  # finished or preempted in the meantime
        seq.draft_tokens.clear()
        if new_tokens:
            seq.token_ids.extend(new_tokens)
            seq.num_computed = seq.num_tokens - 1
        else:
            seq.num_computed = share.start + share.num_tokens
        keep = blocks_for(seq.num_tokens, self.blocks.block_size)
        if len(seq.block_table) > keep:  # blocks of rejected draft positions
            extra = seq.block_table[keep:]
            del seq.block_table[keep:]
            self.reserved -= len(extra)
            self.blocks.release(extra, now)
        if self.blocks.cache is not None:
            done = len(seq.block_hashes)
            extend_chain(seq.root, seq.block_hashes, seq.token_ids, self.blocks.block_size,
                         seq.num_computed)
            for i in range(done, len(seq.block_hashes)):
                self.blocks.register(seq.block_table[i], seq.block_hashes[i])

    def finish(self, seq: Sequence, now: float) -> None:
        """End a sequence (finished, cancelled or failed): release its blocks, erase its content."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self._release(seq, now)
        elif seq.status is SeqStatus.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        seq.erase()

    def preempt(self, seq: Sequence, now: float) -> None:
        """Preempt a running sequence by recompute: release its blocks, requeue it at the front."""
        if seq.status is not SeqStatus.RUNNING:
            return
        self.running.remove(seq)
        self._release(seq, now)
        seq.num_computed = 0
        seq.num_cached = 0
        seq.block_hashes.clear()
        seq.draft_tokens.clear()
        seq.num_preemptions += 1
        seq.status = SeqStatus.WAITING
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def flush(self) -> None:
        """Zero every block freed so far (once per step, batched)."""
        self.blocks.flush()

    def _release(self, seq: Sequence, now: float) -> None:
        self.reserved -= len(seq.block_table)
        self.blocks.release(seq.block_table, now)
        seq.block_table.clear()

    def _admit(self, seq: Sequence, need: int) -> None:
        bs = self.blocks.block_size
        hits: list[int] = []
        if self.blocks.cache is not None:
            hashes: list[bytes] = []
            extend_chain(seq.root, hashes, seq.token_ids, bs, seq.num_tokens - 1)
            hits = self.blocks.acquire_cached(hashes)
            seq.block_hashes = hashes[: len(hits)]
        seq.block_table = hits + self.blocks.allocate(need - len(hits))
        seq.num_cached = len(hits) * bs
        seq.num_computed = 0
        seq.status = SeqStatus.RUNNING
        self.reserved += need
        bisect.insort(self.running, seq, key=lambda s: s.arrival)

    def _grow(self, seq: Sequence, upto: int, now: float) -> bool:
        """Give `seq` blocks for `upto` tokens, preempting newest sequences; False if it was."""
        extra = blocks_for(upto, self.blocks.block_size) - len(seq.block_table)
        while extra > self.blocks.num_blocks - self.reserved:
            victim = self.running[-1]
            self.preempt(victim, now)
            if victim is seq:
                return False
        if extra > 0:
            seq.block_table.extend(self.blocks.allocate(extra))
            self.reserved += extra
        return True

    def _share(self, seq: Sequence, start: int, n: int, drafts: list[int]) -> ScheduledSeq:
        if drafts:
            tokens: list[int] = [seq.token_ids[-1], *drafts]
        else:
            tokens = seq.token_ids[start : start + n]
        skip = max(seq.num_cached - start, 0)
        fed = tokens[skip:]
        last = start + n - len(drafts) >= seq.num_tokens
        chunk = None
        if fed:
            chunk = ForwardChunk(
                token_ids=tuple(fed), start_pos=start + skip,
                block_table=tuple(seq.block_table), num_logits=(1 + len(drafts)) if last else 0,
            )
        return ScheduledSeq(seq, start, n, len(drafts), chunk)
