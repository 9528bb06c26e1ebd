"""The engine's request-facing types: what `Engine.submit` takes, what its stream yields.

Pure data plus `RequestStream`, the async iterator over one request's deltas. The stream reads
the queue the engine fills; it never drives the engine (the engine's step loop does).

Invariants:
* A request is queued when `submit` returns, not when its stream is first read: a `cancel`
  before the first read ends the stream with finish_reason "cancelled".
* A stream that is closed (`aclose`), whose reading task is cancelled (a client disconnect), or
  that is garbage-collected unread cancels its request (E5); the engine erases it within a step.
* `request_id` is random (E9) and nothing here holds request content beyond the deltas queued
  for the reader.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hushcc.errors import HushError, ProtocolError
from node.engine.sampling import SamplingLimits, SamplingParams
from node.engine.sequence import EngineLimits, check_request

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from node.engine.speculative import PromptLookupConfig


class EngineError(HushError):
    """The engine failed while serving a request (the message never carries content)."""


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation request: prompt token ids (the node applies the chat template) + sampling."""

    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of a streamed response.

    Attributes:
        text: new text (never a split UTF-8 character; may be empty on the final delta).
        finish_reason: None while streaming; "stop" (EOS or stop string), "length" or
            "cancelled" at the end.
        prompt_tokens: prompt length in tokens.
        completion_tokens: tokens generated so far.
    """

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Aggregate counters for the node's metrics: counts only."""

    running: int
    waiting: int
    completed: int
    cancelled: int
    failed: int
    preemptions: int
    cache_hit_blocks: int
    cached_blocks: int
    free_blocks: int
    steps: int
    draft_tokens: int
    accepted_drafts: int


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Operator configuration of the engine."""

    limits: EngineLimits = field(default_factory=EngineLimits)
    sampling_limits: SamplingLimits = field(default_factory=SamplingLimits)
    enable_prefix_cache: bool = True
    cache_ttl: float = 60.0
    speculative: PromptLookupConfig | None = None
    eos_token_ids: tuple[int, ...] = ()
    vocab_size: int | None = None
    overlap: bool | None = None  # launch step n+1 before step n's text (None: on for CUDA)


def check_generate(request: GenerateRequest, config: EngineConfig, block_size: int,
                   num_blocks: int) -> tuple[Sequence[int], SamplingParams]:
    """Validate a request's types and ranges against the engine's limits (`Engine.submit`).

    Returns:
        The prompt token ids and the sampling parameters.

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
    params.check_limits(config.sampling_limits)
    check_request(len(prompt), params.max_tokens, config.limits, block_size, num_blocks)
    vocab = config.vocab_size or 2**31  # set vocab_size: ids are then checked exactly
    if not all(type(t) is int and 0 <= t < vocab for t in prompt):
        raise ProtocolError("prompt token id out of range")
    return prompt, params


class RequestStream:
    """The async iterator `Engine.submit` returns; `request_id` is random and internal.

    Yields `Delta`s until one has a `finish_reason`; raises `EngineError` if the request failed.
    """

    __slots__ = ("__weakref__", "_cancel", "_done", "_queue", "request_id")

    def __init__(self, request_id: str, queue: asyncio.Queue[Delta | BaseException],
                 cancel: Callable[[str], None]) -> None:
        """Read `queue` (filled by the engine); `cancel(request_id)` ends the request early."""
        self.request_id = request_id
        self._queue = queue
        self._cancel = cancel
        self._done = False

    def __aiter__(self) -> RequestStream:
        """Return self."""
        return self

    async def __anext__(self) -> Delta:
        """Next delta; raises StopAsyncIteration after the final one."""
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:  # the reader went away (e.g. a client disconnect)
            self._close()
            raise
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    async def aclose(self) -> None:
        """Stop consuming: the request is cancelled (blocks freed and zeroed within one step)."""
        self._close()

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._cancel(self.request_id)
