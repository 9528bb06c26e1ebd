"""The async engine: submit / cancel / stream over the scheduler and a model runner.

Not pure: it owns an asyncio step loop and runs the model forward in a worker thread
(`run_in_executor`) so the event loop stays responsive. Everything it decides comes from the
pure scheduler and block manager; the runner computes.

One step: cancellations -> `schedule(now)` -> `runner.forward(chunks)` (worker thread) ->
`sampler.pick_step` (every logits row of the step in one batched call, one host transfer) ->
accept drafts / append tokens -> stop checks (EOS, max_tokens, stop strings) -> text deltas ->
finish ended sequences -> `flush()` zeroes the step's freed blocks in one `runner.zero_blocks`
call, before any is reused. An idle loop zeroes the runner's buffers (`clear_scratch`) first.

Invariants (SECURITY.md E1, E2, E5, E8, E9):
* A request's blocks are zeroed and its token ids, hashes, detokenizer state, stop buffer and
  seed dropped when it ends -- finished, cancelled (`cancel`, `aclose`, or the consumer
  abandoning the stream, e.g. a client disconnect), or failed -- within one step.
* Requests are checked (types, ranges, limits) in `submit`, before anything is allocated, and
  are queued there at once: batching and `cancel` do not wait for the stream's first read.
* A failure while finishing one request's step (sampling, detokenizing, stop checks) ends that
  request only (failed, its blocks zeroed); the others go on (if the batched sampler fails, each
  request is sampled alone by `sampler.pick_alone` inside its own boundary). A failure of the
  batched forward ends the requests of that step; anything else ends every request.
* Randomness is `seeded_uniform(seed, tokens sampled so far)`, per request (seed or `secrets`).
* Prompt lookup drafts only while it pays for the sequence (`speculative.DraftRecord`).
* Request ids are random (never a counter); stats are counts only (no ids, no content).
* Nothing here logs, prints or puts request content in an exception message.
* The tenant salt is an argument of `submit` (derived by the node), never read from the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hushcc.errors import ProtocolError
from node.engine.blocks import BlockManager
from node.engine.detokenize import IncrementalDetokenizer
from node.engine.prefix_cache import PrefixCache, chain_root
from node.engine.requests import (
    Delta,
    EngineConfig,
    EngineError,
    EngineStats,
    GenerateRequest,
    RequestStream,
)
from node.engine.sampler import RowsWanted, pick_alone, pick_step
from node.engine.sampling import SamplingParams, find_stop, stop_holdback
from node.engine.scheduler import Scheduler
from node.engine.sequence import SeqStatus, Sequence, check_request
from node.engine.speculative import DraftRecord, accept

__all__ = ["Delta", "Engine", "EngineConfig", "EngineError", "EngineStats", "GenerateRequest",
           "RequestStream"]

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence as Seq

    import torch

    from node.engine.batch import ModelRunner
    from node.engine.detokenize import Decoder
    from node.engine.scheduler import ScheduledSeq


@dataclass(slots=True, eq=False)
class _Live:
    """Engine-side state of one live request (dropped when it ends)."""

    request_id: str
    seq: Sequence
    params: SamplingParams
    detok: IncrementalDetokenizer
    queue: asyncio.Queue[Delta | BaseException]
    seed: int | None = None  # sampling seed (None when greedy)
    pending: str = ""  # decoded text held back because it may begin a stop string
    cancelled: bool = False
    drafts: DraftRecord = field(default_factory=DraftRecord)

    def drop(self) -> None:
        self.seq.erase()
        self.detok.clear()
        self.pending = ""
        self.seed = None


class Engine:
    """Continuous-batching engine over a `ModelRunner` (see the module docstring)."""

    pick_step = staticmethod(pick_step)  # the step's batched sampling (bench/engine.py swaps it)

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Decoder,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an engine; its step loop starts on the first `submit`.

        Args:
            runner: computes steps over its KV pool and zeroes blocks.
            tokenizer: decodes generated tokens (transformers-style `decode`).
            config: limits, cache and speculation settings.
            clock: monotonic time in seconds (injected for TTL tests).
        """
        self.config = config or EngineConfig()
        self.runner = runner
        self.tokenizer = tokenizer
        self.clock = clock
        cache = PrefixCache(self.config.cache_ttl) if self.config.enable_prefix_cache else None
        blocks = BlockManager(runner.num_blocks, runner.block_size, runner.zero_blocks, cache)
        self.scheduler = Scheduler(blocks, self.config.limits)
        self._live: dict[int, _Live] = {}
        self._by_request: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[list[torch.Tensor]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scratch_dirty = False
        self._counts = dict.fromkeys(
            ("completed", "cancelled", "failed", "steps", "drafts", "accepted"), 0)

    def submit(self, request: GenerateRequest, tenant_salt: bytes) -> RequestStream:
        """Check and queue a request at once; stream its text deltas.

        Must be called on the event loop's thread (it starts the step loop there). The request is
        in the scheduler's queue when this returns, so it is batched with the others whether or
        not its stream is being read, and `cancel` works before the first read.

        Args:
            request: prompt token ids and sampling parameters.
            tenant_salt: the server-derived tenant salt (>= 16 bytes) keying the prefix cache.

        Returns:
            An async iterator of `Delta`s; the last one has a `finish_reason`.

        Raises:
            ProtocolError: the request is malformed or breaks a limit, naming the field (nothing is
                allocated).
            ConfigError: the salt is invalid.
        """
        prompt, params = self._check(request)
        root = chain_root(tenant_salt)
        loop = asyncio.get_running_loop()
        seq = Sequence(seq_id=secrets.randbits(63), root=root, token_ids=list(prompt),
                       num_prompt_tokens=len(prompt), max_tokens=params.max_tokens)
        seed = None
        if not params.greedy:
            seed = params.seed if params.seed is not None else secrets.randbits(63)
        request_id = secrets.token_hex(16)
        queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        live = _Live(request_id, seq, params, IncrementalDetokenizer(self.tokenizer), queue, seed)
        self._live[seq.seq_id] = live
        self._by_request[request_id] = seq.seq_id
        self.scheduler.add(seq)
        self._loop = loop
        self._ensure_loop()
        stream = RequestStream(request_id, queue, self.cancel)
        # a stream dropped unread cancels its request; GC may run in any thread
        weakref.finalize(stream, self._abandon, request_id).atexit = False
        return stream

    def _check(self, request: GenerateRequest) -> tuple[Seq[int], SamplingParams]:
        """Validate a request's types and ranges against the limits.

        Raises:
            ProtocolError: naming the field, never the prompt.
        """
        if not isinstance(request, GenerateRequest):
            raise ProtocolError("request must be a GenerateRequest")
        prompt, params = request.prompt_token_ids, request.params
        if not isinstance(params, SamplingParams):
            raise ProtocolError("params must be SamplingParams")
        if not isinstance(prompt, (tuple, list)):
            raise ProtocolError("prompt_token_ids must be a sequence of token ids")
        params.check()  # again: a frozen dataclass can still be altered behind its back
        params.check_limits(self.config.sampling_limits)
        check_request(len(prompt), params.max_tokens, self.config.limits,
                      self.runner.block_size, self.runner.num_blocks)
        vocab = self.config.vocab_size or 2**31  # set vocab_size: ids are then checked exactly
        if not all(type(t) is int and 0 <= t < vocab for t in prompt):
            raise ProtocolError("prompt token id out of range")
        return prompt, params

    def cancel(self, request_id: str) -> None:
        """Cancel a request: its blocks are freed and zeroed at the next step boundary.

        Works from submit on (before the stream is read); unknown or ended ids are ignored.
        """
        seq_id = self._by_request.get(request_id)
        if seq_id is not None and seq_id in self._live:
            self._live[seq_id].cancelled = True
            self._wake.set()

    def _abandon(self, request_id: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.cancel, request_id)

    def stats(self) -> EngineStats:
        """Counts for the node's metrics (no ids, no content)."""
        s, cache = self.scheduler, self.scheduler.blocks.cache
        return EngineStats(
            running=len(s.running), waiting=len(s.waiting), completed=self._counts["completed"],
            cancelled=self._counts["cancelled"], failed=self._counts["failed"],
            preemptions=s.num_preemptions, cache_hit_blocks=cache.hits if cache else 0,
            cached_blocks=cache.num_parked if cache else 0, free_blocks=s.blocks.num_free,
            steps=self._counts["steps"], draft_tokens=self._counts["drafts"],
            accepted_drafts=self._counts["accepted"])

    @property
    def idle(self) -> bool:
        """True when no request is live."""
        return not self._live and not self.scheduler.has_work

    def expire_cache(self) -> None:
        """Zero the cached prefix blocks whose TTL has passed (the idle loop calls this)."""
        self.scheduler.blocks.expire(self.clock())
        self._flush_unless_in_flight()

    def _flush_unless_in_flight(self) -> None:
        # during a forward the step's own final flush zeroes them (never two writers at once)
        if self._inflight is None or self._inflight.done():
            self.scheduler.flush()

    def _idle_timeout(self) -> float | None:
        deadline = None if (cache := self.scheduler.blocks.cache) is None else cache.next_expiry()
        return None if deadline is None else max(deadline - self.clock(), 0.0) + 0.01

    def drop_prefix_cache(self) -> None:
        """Zero and forget every idle cached prefix block."""
        self.scheduler.blocks.drop_cache()
        self._flush_unless_in_flight()

    async def close(self) -> None:
        """Stop the step loop, end every request, zero every block (cache included)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight is not None:  # a forward still writing KV: let it end before erasing
            await asyncio.wait([self._inflight])
        self._fail_all(EngineError("engine closed"))
        self.drop_prefix_cache()
        self.runner.clear_scratch()

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._apply_cancellations()
            if not self.scheduler.has_work:
                if self._scratch_dirty:  # idle: nothing of the last step stays in the runner
                    self.runner.clear_scratch()
                    self._scratch_dirty = False
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
                self.expire_cache()
                continue
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - a bug must not leave requests (or blocks) behind
                self._fail_all(EngineError("engine failure"))

    def _apply_cancellations(self) -> None:
        for live in [lv for lv in self._live.values() if lv.cancelled]:
            seq = live.seq
            self._end(live, Delta("", "cancelled", seq.num_prompt_tokens, seq.num_generated),
                      "cancelled")
        self.scheduler.flush()

    def _fail_all(self, exc: BaseException) -> None:
        for live in list(self._live.values()):
            self._end(live, exc, "failed")
        self.scheduler.flush()

    async def step(self) -> None:
        """Run one engine step (the loop calls this; tests may drive it directly)."""
        self._counts["steps"] += 1
        self._scratch_dirty = True
        plan = self.scheduler.schedule(self.clock())
        chunks = plan.chunks
        try:
            logits: list[torch.Tensor] = []
            if chunks:
                fut = asyncio.get_running_loop().run_in_executor(None, self.runner.forward, chunks)
                self._inflight = fut
                logits = await asyncio.shield(fut)
                self._inflight = None
        except Exception:  # noqa: BLE001 - any runner failure ends the step's requests, erased
            for share in plan.scheduled:
                if share.seq.seq_id in self._live:
                    self._end(self._live[share.seq.seq_id], EngineError("inference failed"),
                              "failed")
            self.scheduler.flush()
            return
        rows = iter(logits)
        outs = [next(rows) if share.chunk is not None else None for share in plan.scheduled]
        wants = [self._wants(share, out) for share, out in zip(plan.scheduled, outs, strict=True)]
        picks = self.pick_step(outs, wants)
        now = self.clock()
        for share, out, want, ids in zip(plan.scheduled, outs, wants, picks, strict=True):
            live = self._live.get(share.seq.seq_id)
            if live is None or live.cancelled or live.seq.status is not SeqStatus.RUNNING:
                continue
            try:
                if ids is None and want is not None and out is not None:  # batched call failed
                    self._advance(live, share, pick_alone(out, want), now)  # this one alone
                else:
                    self._advance(live, share, ids, now)
            except Exception:  # noqa: BLE001 - confined to this request; the others go on
                if live.seq.seq_id in self._live:
                    self._end(live, EngineError("inference failed"), "failed")
        self.scheduler.flush()  # zero every block freed this step, batched

    def _wants(self, share: ScheduledSeq, out: torch.Tensor | None) -> RowsWanted | None:
        """What the share needs from its logits rows (None: nothing to sample)."""
        live = self._live.get(share.seq.seq_id)
        return None if live is None or out is None or not share.samples else RowsWanted(
            live.params, live.seed, live.seq.num_generated, bool(share.num_drafts))

    def _advance(self, live: _Live, share: ScheduledSeq, ids: list[int] | None,
                 now: float) -> None:
        if ids is None:  # a prefill chunk that does not end the prompt (or one the cache holds)
            self.scheduler.complete(share, [], now)
            return
        seq, params = live.seq, live.params
        if share.num_drafts:
            new = accept(seq.draft_tokens[: share.num_drafts], ids)
            self._counts["drafts"] += share.num_drafts
            self._counts["accepted"] += len(new) - 1
        else:
            new = [ids[-1]]
        if (spec := self.config.speculative) is not None:
            live.drafts = live.drafts.record(share.num_drafts, new, spec)
        new = new[: seq.max_tokens - seq.num_generated]
        eos = not params.ignore_eos and any(t in self.config.eos_token_ids for t in new)
        if eos:
            new = new[: next(i for i, t in enumerate(new) if t in self.config.eos_token_ids) + 1]
        self.scheduler.complete(share, new, now)
        text = live.detok.add([t for t in new if t not in self.config.eos_token_ids or
                               params.ignore_eos])
        length = seq.num_generated >= seq.max_tokens
        if eos or length:
            text += live.detok.flush()
        if self._emit(live, text, final=eos or length):
            return
        if eos or length:
            self._finish(live, "stop" if eos else "length")
        elif spec is not None and params.greedy:
            seq.draft_tokens, live.drafts = live.drafts.plan(seq.token_ids, spec)

    def _emit(self, live: _Live, text: str, *, final: bool) -> bool:
        """Stream text through the stop-string check; True when a stop string ended the request.

        Text that could be the start of a stop string is held back until it cannot; on the final
        token everything left stays in `pending` for the final delta.
        """
        stop = live.params.stop
        live.pending += text
        cut = find_stop(live.pending, stop) if stop else -1
        if cut >= 0:
            live.pending = live.pending[:cut]
            self._finish(live, "stop")
            return True
        if final:
            return False
        keep = stop_holdback(live.pending, stop) if stop else 0
        ready = live.pending[: len(live.pending) - keep]
        live.pending = live.pending[len(live.pending) - keep :]
        if ready:
            live.queue.put_nowait(
                Delta(ready, None, live.seq.num_prompt_tokens, live.seq.num_generated))
        return False

    def _finish(self, live: _Live, reason: str) -> None:
        seq = live.seq
        delta = Delta(live.pending, reason, seq.num_prompt_tokens, seq.num_generated)
        self._end(live, delta, "completed")

    def _end(self, live: _Live, last: Delta | BaseException, outcome: str) -> None:
        self.scheduler.finish(live.seq, self.clock())
        self._live.pop(live.seq.seq_id, None)
        self._by_request.pop(live.request_id, None)
        self._counts[outcome] += 1
        live.drop()
        live.queue.put_nowait(last)
