"""Per-request state of the engine and the limits every request is checked against (E8).

Pure Python, no torch. A `Sequence` holds request content (token ids, block hashes) only while the
request is live: `Sequence.erase` drops all of it, and the scheduler calls it on finish, cancel and
error. Preemption keeps the token ids (the sequence recomputes) but drops hashes and blocks.

Invariants:
* `0 <= num_computed <= len(token_ids)`; while decoding `num_computed == len(token_ids) - 1`.
* `len(block_table) == ceil(len(token_ids) / block_size)` while running (plus, transiently, the
  blocks of speculative draft positions of the current step); `block_table == []` when not running.
* `seq_id` is random (never a counter) and is never put in a response (E9).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hushcc.errors import ConfigError, ProtocolError


class SeqStatus(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Limits that bound a request's memory and work before anything is allocated (E8).

    Attributes:
        max_model_len: most tokens (prompt + output) a sequence may hold.
        max_tokens_cap: most output tokens one request may ask for.
        max_num_seqs: most sequences running at once.
        max_num_batched_tokens: the per-step token budget (prefill chunks + decodes + drafts).
        max_draft_tokens: most speculative draft tokens verified per sequence per step.
    """

    max_model_len: int = 2048
    max_tokens_cap: int = 1024
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 1024
    max_draft_tokens: int = 4

    def __post_init__(self) -> None:
        """Reject limits that would make the scheduler unable to progress."""
        if min(self.max_model_len, self.max_tokens_cap, self.max_num_seqs) < 1:
            raise ConfigError("engine limits must be positive")
        if self.max_draft_tokens < 0:
            raise ConfigError("max_draft_tokens must not be negative")
        if self.max_num_batched_tokens < 1:
            raise ConfigError("the per-step token budget must be positive")


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold `num_tokens` tokens."""
    return -(-num_tokens // block_size)


def check_request(
    num_prompt_tokens: int, max_tokens: int, limits: EngineLimits, block_size: int, num_blocks: int
) -> None:
    """Reject a request that could never be served, before anything is allocated (E8).

    Args:
        num_prompt_tokens: prompt length in tokens.
        max_tokens: output tokens requested.
        limits: the engine's limits.
        block_size: tokens per KV block.
        num_blocks: blocks in the KV pool.

    Raises:
        ProtocolError: with a message naming the limit, never the content.
    """
    if num_prompt_tokens < 1:
        raise ProtocolError("prompt is empty")
    if max_tokens < 1:
        raise ProtocolError("max_tokens must be at least 1")
    if max_tokens > limits.max_tokens_cap:
        raise ProtocolError("max_tokens exceeds the engine's cap")
    if num_prompt_tokens + max_tokens > limits.max_model_len:
        raise ProtocolError("prompt plus max_tokens exceeds the model's maximum length")
    if blocks_for(num_prompt_tokens + max_tokens, block_size) > num_blocks:
        raise ProtocolError("request needs more KV blocks than the pool holds")


@dataclass(slots=True, eq=False)
class Sequence:
    """Mutable state of one request inside the scheduler (identity-compared, never hashed by value).

    Attributes:
        seq_id: random internal id (never exposed).
        root: h_0 of the tenant's prefix hash chain (identifies the tenant; not the salt itself).
        token_ids: prompt followed by the tokens generated so far.
        num_prompt_tokens: length of the prompt.
        max_tokens: output tokens allowed.
        status: where the sequence is.
        block_table: KV blocks, one per logical block, in order.
        num_computed: tokens whose KV is in the blocks (logical progress; includes cache hits).
        num_cached: leading tokens served from the prefix cache at the last admission.
        block_hashes: chained hashes of the full, computed blocks.
        draft_tokens: speculative tokens to verify in the next step.
        num_preemptions: times this sequence was preempted.
        arrival: admission-order ordinal inside the scheduler (FCFS; never exposed).
    """

    seq_id: int
    root: bytes
    token_ids: list[int]
    num_prompt_tokens: int
    max_tokens: int
    status: SeqStatus = SeqStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_cached: int = 0
    block_hashes: list[bytes] = field(default_factory=list)
    draft_tokens: list[int] = field(default_factory=list)
    num_preemptions: int = 0
    arrival: int = 0

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.token_ids)

    @property
    def num_generated(self) -> int:
        """Tokens generated so far."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_prefilling(self) -> bool:
        """True while the sequence still has known tokens whose KV is not computed."""
        return self.num_tokens - self.num_computed > 1

    def erase(self) -> None:
        """Drop every piece of request content this object holds (finish, cancel, error)."""
        self.token_ids.clear()
        self.block_hashes.clear()
        self.draft_tokens.clear()
        self.block_table.clear()
        self.root = b""
        self.num_computed = 0
        self.num_cached = 0
        self.status = SeqStatus.FINISHED
