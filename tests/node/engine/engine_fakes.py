"""A fake KV pool of Python lists for scheduler-level tests (no model, no torch).

Each slot holds `(tenant_root, token_id)` once written, or 0 when zero; `write` plays the runner's
part of a step (KV of every fed token lands in its slot), `zero_blocks` the runner's erasure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.scheduler import StepPlan

Slot = tuple[bytes, int] | int


class FakePool:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.slots: list[list[Slot]] = [[0] * block_size for _ in range(num_blocks)]
        self.zero_calls = 0

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        self.zero_calls += 1
        for b in block_ids:
            self.slots[b] = [0] * self.block_size

    def is_zero(self, block: int) -> bool:
        return all(s == 0 for s in self.slots[block])

    def write(self, plan: StepPlan) -> None:
        for share in plan.scheduled:
            if share.chunk is None:
                continue
            c = share.chunk
            for i, tok in enumerate(c.token_ids):
                p = c.start_pos + i
                self.slots[c.block_table[p // self.block_size]][p % self.block_size] = (
                    share.seq.root, tok)
