"""The contract between the scheduler/engine and the model runner: one step's batch.

The scheduler decides, each step, which tokens of which sequences are computed; the runner
computes them over the paged KV cache and returns logits. Nothing else crosses this line.

Invariants:
* `block_table` covers every position the chunk writes: for each position p in
  `[start_pos, start_pos + len(token_ids))`, `block_table[p // block_size]` is a block the
  sequence owns; slot = block * block_size + p % block_size.
* KV for positions before `start_pos` is already in those blocks (prefix-cache hits included).
* The runner's KV pool is allocated zeroed, and `zero_blocks` zeroes whole blocks in one batched
  operation; the engine calls it for every block it frees (finish, cancel, preempt, error).
* Pure data: no tensors here, so the scheduler stays testable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch


@dataclass(frozen=True, slots=True)
class ForwardChunk:
    """Tokens of one sequence to compute in this step.

    Attributes:
        token_ids: the tokens fed this step (a prefill chunk, one decode token, or the last
            accepted token followed by speculative draft tokens).
        start_pos: position of `token_ids[0]` in the sequence.
        block_table: the sequence's KV blocks, in order.
        num_logits: how many trailing positions need logits (0 for a prefill chunk that is not
            the prompt's last, 1 for ordinary decode, 1 + number of draft tokens when verifying).
    """

    token_ids: Sequence[int]
    start_pos: int
    block_table: Sequence[int]
    num_logits: int = 1


class ModelRunner(Protocol):
    """What the engine needs from a model runner (implemented in `node/engine/runner.py`)."""

    @property
    def block_size(self) -> int:
        """Tokens per KV block."""
        ...

    @property
    def num_blocks(self) -> int:
        """Blocks in the pre-allocated pool."""
        ...

    def forward(self, chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        """Compute one step; return, per chunk, float logits `[num_logits, vocab]`.

        The logits stay on the runner's device (views of one tensor): the engine samples them
        there and brings only the chosen token ids to the host (`sampler.pick_step`).
        """
        ...

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        """Zero the given KV blocks in every layer, K and V, in one batched operation."""
        ...

    def clear_scratch(self) -> None:
        """Zero the per-step buffers the runner reuses (the engine calls it when it goes idle)."""
        ...

    def kv_pool_is_zero(self, block_ids: Sequence[int] | None = None) -> bool:
        """True when the given blocks (default: the whole pool) hold only zeros."""
        ...
