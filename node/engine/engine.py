"""The async engine: submit / cancel / stream over the scheduler and a model runner.

Not pure: it owns an asyncio step loop; one worker thread (`run_in_executor`) runs every step's
forward and its batched sampling (`sampler.run_and_pick`: one host transfer, waited for there)
so the event loop stays responsive. Its decisions come from the pure scheduler and block
manager. A step, in the phases of `overlap.py`: LAND (await that work) -> HEAD (accept drafts,
append tokens, EOS / max_tokens ends, drafts planned; cancellations; `flush()` zeroes the freed
blocks in one `runner.zero_blocks` call, before any is reused) -> LAUNCH (with `overlap`: plan
and start step n+1) -> TAIL (detokenise, stop strings, deltas) while n+1 computes. Without
overlap, LAUNCH comes at the start of the next step. Idle, the runner's buffers are zeroed
(`clear_scratch`).

Invariants (SECURITY.md E1, E2, E5, E8, E9):
* A request's blocks are zeroed and its token ids, hashes, detokenizer state, stop buffer and
  seed dropped when it ends -- finished, cancelled (`cancel`, `aclose`, or the consumer
  abandoning the stream, e.g. a client disconnect), or failed -- within one step; its final
  delta is queued only once its blocks are zeroed.
* Never two writers on the pool: blocks are zeroed only while no forward is in flight.
* Requests are checked (types, ranges, limits) in `submit`, before anything is allocated, and
  are queued there at once: batching and `cancel` do not wait for the stream's first read.
* A failure while finishing one request's step (sampling, detokenizing, stop checks) ends that
  request only (failed, its blocks zeroed); the others go on (if the batched sampler fails, each
  request is sampled alone by `sampler.pick_alone` inside its own boundary). A failure of the
  batched forward ends the requests of that step; anything else ends every request.
* The same requests give the same tokens and deltas with overlap on or off (tested).
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.engine.blocks import BlockManager
from node.engine.detokenize import IncrementalDetokenizer
from node.engine.live import LiveRequest
from node.engine.overlap import resolve_overlap, settle, text_tokens
from node.engine.prefix_cache import PrefixCache, chain_root
from node.engine.requests import (
    Delta,
    EngineConfig,
    EngineError,
    EngineStats,
    GenerateRequest,
    RequestStream,
    check_generate,
)
from node.engine.sampler import RowsWanted, pick_alone, pick_step, run_and_pick
from node.engine.scheduler import Scheduler
from node.engine.sequence import SeqStatus, Sequence

__all__ = ["Delta", "Engine", "EngineConfig", "EngineError", "EngineStats", "GenerateRequest",
           "RequestStream"]

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.engine.batch import ModelRunner
    from node.engine.detokenize import Decoder
    from node.engine.overlap import Settled
    from node.engine.sampler import Picks, Rows
    from node.engine.scheduler import ScheduledSeq, StepPlan


@dataclass(frozen=True, slots=True)
class _Launch:
    """A planned step, what each share wants sampled, its work (None: nothing to compute)."""

    plan: StepPlan
    wants: list[RowsWanted | None]
    work: asyncio.Future[tuple[Rows, Picks]] | None


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
            config: limits, cache, speculation and overlap settings.
            clock: monotonic time in seconds (injected for TTL tests).
        """
        self.config = config or EngineConfig()
        self.runner = runner
        self.tokenizer = tokenizer
        self.clock = clock
        device_type = getattr(getattr(runner, "device", None), "type", None)  # may have none
        self.overlap = resolve_overlap(setting=self.config.overlap, device_type=device_type)
        cache = PrefixCache(self.config.cache_ttl) if self.config.enable_prefix_cache else None
        blocks = BlockManager(runner.num_blocks, runner.block_size, runner.zero_blocks, cache)
        self.scheduler = Scheduler(blocks, self.config.limits)
        self._live: dict[int, LiveRequest] = {}
        self._by_request: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next: _Launch | None = None  # launched ahead (overlap), landed by the next step
        self._inflight: asyncio.Future[tuple[Rows, Picks]] | None = None
        self._finals: list[tuple[LiveRequest, Delta | BaseException]] = []  # wait for a flush
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scratch_dirty = False
        self._counts = dict.fromkeys(
            ("completed", "cancelled", "failed", "steps", "drafts", "accepted"), 0)
        self._forwards: ThreadPoolExecutor | None = None  # the forward thread, while running

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
        prompt, params = check_generate(request, self.config, self.runner.block_size,
                                        self.runner.num_blocks)
        root = chain_root(tenant_salt)
        seq = Sequence(seq_id=secrets.randbits(63), root=root, token_ids=list(prompt),
                       num_prompt_tokens=len(prompt), max_tokens=params.max_tokens)
        seed = None if params.greedy else (
            params.seed if params.seed is not None else secrets.randbits(63))
        request_id = secrets.token_hex(16)
        queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        live = LiveRequest(request_id, seq, params, IncrementalDetokenizer(self.tokenizer), queue,
                           seed)
        self._live[seq.seq_id] = live
        self._by_request[request_id] = seq.seq_id
        self.scheduler.add(seq)
        self._loop = asyncio.get_running_loop()
        self._ensure_loop()
        stream = RequestStream(request_id, queue, self.cancel)
        # a stream dropped unread cancels its request; GC may run in any thread
        weakref.finalize(stream, self._abandon, request_id).atexit = False
        return stream

    def cancel(self, request_id: str) -> None:
        """Cancel a request: its blocks are freed and zeroed at the next step boundary.

        Works from submit on (before the stream is read); unknown or ended ids are ignored.
        """
        seq_id = self._by_request.get(request_id)
        if seq_id is not None and seq_id in self._live:
            self._live[seq_id].cancelled = True
            self._wake.set()

    def _abandon(self, request_id: str) -> None:  # a dropped stream, from any thread
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
        """True when no request is live and no forward is in flight."""
        return (not self._live and not self.scheduler.has_work and self._next is None
                and self._inflight is None and not self._finals)

    def expire_cache(self) -> None:
        """Zero the cached prefix blocks whose TTL has passed (the idle loop calls this)."""
        self.scheduler.blocks.expire(self.clock())
        self._flush()

    def drop_prefix_cache(self) -> None:
        """Zero and forget every idle cached prefix block."""
        self.scheduler.blocks.drop_cache()
        self._flush()

    def _flush(self) -> None:
        """Zero the freed blocks, then queue the final deltas that waited for it.

        Not while a forward is in flight (never two writers): the step that lands it flushes.
        """
        if self._inflight is not None and not self._inflight.done():
            return
        self.scheduler.flush()
        finals, self._finals = self._finals, []
        for live, last in finals:
            live.queue.put_nowait(last)

    def _idle_timeout(self) -> float | None:
        deadline = None if (cache := self.scheduler.blocks.cache) is None else cache.next_expiry()
        return None if deadline is None else max(deadline - self.clock(), 0.0) + 0.01

    async def close(self) -> None:
        """Stop the step loop, end every request, zero every block (cache included)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._settle()
        if self._forwards is not None:  # no forward is in flight after `_settle`
            self._forwards.shutdown(wait=False)
            self._forwards = None
        self._fail_all(EngineError("engine closed"))
        self.drop_prefix_cache()
        self.runner.clear_scratch()

    async def _settle(self) -> None:
        """Let a forward still writing KV end (its results dropped), then flush."""
        self._next = None
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
            self._inflight = None
        self._flush()

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._apply_cancellations()
            if not self.scheduler.has_work and self._next is None:
                await self._settle()  # after a failure, a forward may still be in flight
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
            self._end(live, live.delta("", "cancelled"), "cancelled")
        self._flush()

    def _fail_all(self, exc: BaseException) -> None:
        for live in list(self._live.values()):
            self._end(live, exc, "failed")
        self._flush()

    async def step(self) -> None:
        """Run one engine step (the loop calls this; tests may drive it directly).

        With overlap, the step lands the forward the previous step launched and launches the
        next one before its TAIL; a forward may then be in flight when it returns.
        """
        launch, self._next = self._next or self._launch(), None  # LAUNCH without overlap
        landed = await self._land(launch)
        if landed is None:  # the forward failed: its step's requests are ended
            self._flush()
            return
        settled = self._head(launch, *landed)
        self._apply_cancellations()  # flushes: no forward is in flight here
        if self.overlap and self.scheduler.has_work:
            self._next = self._launch()
        for live, tokens in settled:
            self._tail(live, tokens)
        self._flush()  # deferred to the next step while forward n+1 is in flight

    def _launch(self) -> _Launch:
        """Plan a step and start its forward and sampling in the executor (LAUNCH)."""
        self._counts["steps"] += 1
        self._scratch_dirty = True
        plan = self.scheduler.schedule(self.clock())
        wants = [self._wants(share) for share in plan.scheduled]
        if not plan.chunks:
            return _Launch(plan, wants, None)
        fut = asyncio.get_running_loop().run_in_executor(
            self._forward_thread(), run_and_pick, self.runner.forward,
            [sh.chunk for sh in plan.scheduled], wants, self.pick_step)
        self._inflight = fut
        return _Launch(plan, wants, fut)

    def _forward_thread(self) -> ThreadPoolExecutor:
        """The one thread that runs every forward until `close`.

        Not the loop's default executor: that one may hand consecutive steps to different
        threads, and each thread that starts a parallel region gets its own OpenMP team (more
        threads spinning on two cores, more stacks that held activations).
        """
        if self._forwards is None:
            self._forwards = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hushcc-forward")
            weakref.finalize(self, self._forwards.shutdown, wait=False)  # never closed
        return self._forwards

    async def _land(self, launch: _Launch) -> tuple[Rows, Picks] | None:
        """The step's logits and tokens, or None when its forward failed (its requests end)."""
        if launch.work is None:
            return [None] * len(launch.wants), [None] * len(launch.wants)
        try:
            landed = await asyncio.shield(launch.work)
        except Exception:  # noqa: BLE001 - any runner failure ends the step's requests, erased
            self._inflight = None
            for share in launch.plan.scheduled:
                if (live := self._live.get(share.seq.seq_id)) is not None:
                    self._end(live, EngineError("inference failed"), "failed")
            return None
        self._inflight = None
        return landed

    def _head(self, launch: _Launch, outs: Rows, picks: Picks
              ) -> list[tuple[LiveRequest, Settled]]:
        """HEAD: settle every share's tokens; returns what TAIL must turn into text."""
        now = self.clock()
        settled: list[tuple[LiveRequest, Settled]] = []
        for share, out, want, ids in zip(launch.plan.scheduled, outs, launch.wants, picks,
                                         strict=True):
            live = self._live.get(share.seq.seq_id)
            if live is None or live.cancelled or live.seq.status is not SeqStatus.RUNNING:
                continue  # ended since its launch (its row was wasted)
            try:
                got = ids
                if got is None and want is not None and out is not None:  # batched call failed
                    got = pick_alone(out, want)  # this one alone
                if got is None:  # a prefill chunk that does not end the prompt (or cached)
                    self.scheduler.complete(share, [], now)
                else:
                    settled.append((live, self._settle_share(live, share, got, now)))
            except Exception:  # noqa: BLE001 - confined to this request; the others go on
                if live.seq.seq_id in self._live:
                    self._end(live, EngineError("inference failed"), "failed")
        return settled

    def _wants(self, share: ScheduledSeq) -> RowsWanted | None:
        """What the share needs from its logits rows (None: nothing to sample)."""
        live = self._live.get(share.seq.seq_id)
        return None if live is None or share.chunk is None or not share.samples else RowsWanted(
            live.params, live.seed, live.generated, bool(share.num_drafts))

    def _settle_share(self, live: LiveRequest, share: ScheduledSeq, ids: list[int],
                      now: float) -> Settled:
        seq, params, spec = live.seq, live.params, self.config.speculative
        drafts = seq.draft_tokens[: share.num_drafts]
        out = settle(drafts, ids, generated=live.generated, max_tokens=seq.max_tokens,
                     eos=self.config.eos_token_ids, ignore_eos=params.ignore_eos)
        self._counts["drafts"] += share.num_drafts
        self._counts["accepted"] += out.accepted if share.num_drafts else 0
        if spec is not None:
            live.drafts = live.drafts.record(share.num_drafts, out.verified, spec)
        self.scheduler.complete(share, out.tokens, now)
        live.generated += len(out.tokens)
        if out.end is not None:  # its blocks are not planned again (zeroed by this HEAD)
            self.scheduler.finish(seq, now)
        elif spec is not None and params.greedy:
            seq.draft_tokens, live.drafts = live.drafts.plan(seq.token_ids, spec)
        return out

    def _tail(self, live: LiveRequest, out: Settled) -> None:
        """TAIL: the share's text, stop strings and deltas; a late stop ends the request."""
        if live.seq.seq_id not in self._live:
            return  # ended since HEAD (failed or cancelled)
        try:
            tokens = text_tokens(out.tokens, self.config.eos_token_ids,
                                 ignore_eos=live.params.ignore_eos)
            if live.emit(tokens, final=out.end is not None):
                self._end(live, live.delta(live.pending, "stop"), "completed")
            elif out.end is not None:
                self._end(live, live.delta(live.pending, out.end), "completed")
        except Exception:  # noqa: BLE001 - confined to this request; the others go on
            if live.seq.seq_id in self._live:
                self._end(live, EngineError("inference failed"), "failed")

    def _end(self, live: LiveRequest, last: Delta | BaseException, outcome: str) -> None:
        """End a request: release its blocks, drop its content, queue its final delta.

        The delta waits for the next flush when the request held blocks (at once otherwise).
        """
        holds = bool(live.seq.block_table)
        self.scheduler.finish(live.seq, self.clock())
        self._live.pop(live.seq.seq_id, None)
        self._by_request.pop(live.request_id, None)
        self._counts[outcome] += 1
        live.drop()
        if holds:
            self._finals.append((live, last))
        else:
            live.queue.put_nowait(last)
