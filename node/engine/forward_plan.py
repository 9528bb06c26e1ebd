"""How one forward lays out its tokens: the index tensors every layer of the runner shares.

`ForwardPlan` flattens a step's chunks into rows (token ids, positions, KV slots, logit rows),
checks each chunk against the pool, and sorts the chunks into short ones (decodes and draft
verification, batched by length group into padded SDPA calls: `ShortBatch`, grouped by
`group_by_length`) and long ones (one SDPA each: `LongChunk`).

Invariants:
* A chunk is checked before anything is computed: non-empty, inside the model length, its
  block table covering every position it writes with blocks of the pool (ProtocolError).
* The row-indexed tensors live in `Scratch`, buffers allocated once and reused by every step;
  `Scratch.clear` zeroes them (the engine asks for it when it goes idle). Every other tensor of
  a plan is dropped with the plan at the end of the forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from hushcc.errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.batch import ForwardChunk

SHORT_CHUNK = 8  # chunks up to this long (decodes, draft verification) share padded SDPAs


class ShortChunk(NamedTuple):
    """A chunk of at most `SHORT_CHUNK` tokens, attended in a padded group."""

    row0: int  # its first row in the step's flattened tokens
    length: int  # tokens in the chunk
    start: int  # position of its first token
    table: list[int]  # the blocks covering positions [0, start + length)


class LongChunk(NamedTuple):
    """A chunk attended on its own."""

    row0: int  # its first row in the step's flattened tokens
    length: int  # tokens in the chunk
    blocks: torch.Tensor | None  # blocks to gather its KV from; None: starts at 0, uses fresh K/V
    kv_len: int  # keys attended (start + length)
    mask: torch.Tensor | None  # [length, kv_len] causal mask; None: plain causal


class ShortBatch:
    """Index tensors of the padded attention of one length group of short chunks."""

    def __init__(
        self,
        short: list[ShortChunk],
        block_size: int,
        group: int,
        device: torch.device,
    ) -> None:
        """Build from the group's short chunks."""
        self.batch = len(short)
        self.width = max(n for _, n, _, _ in short)
        nblk = max(len(t) for _, _, _, t in short)
        blocks = [t + [t[0]] * (nblk - len(t)) for _, _, _, t in short]
        self.blocks = torch.tensor(blocks, dtype=torch.long, device=device).view(-1)
        # padded query slots repeat the chunk's last row (their outputs are dropped)
        q_rows = [r + min(i, n - 1) for r, n, _, _ in short for i in range(self.width)]
        q_pos = [s + min(i, n - 1) for _, n, s, _ in short for i in range(self.width)]
        self.q_rows = torch.tensor(q_rows, dtype=torch.long, device=device)
        self.out_rows = torch.tensor(
            [r + i for r, n, _, _ in short for i in range(n)], dtype=torch.long, device=device)
        valid = [j * self.width + i for j, (_, n, _, _) in enumerate(short) for i in range(n)]
        self.valid = None if len(valid) == len(q_rows) else torch.tensor(valid, device=device)
        kpos = torch.arange(nblk * block_size, device=device)
        qpos = torch.tensor(q_pos, device=device).view(self.batch, self.width)
        mask = kpos[None, None, :] <= qpos[:, :, None]  # [B, width, keys]
        if self.width > 1 and group > 1:
            mask = mask.repeat_interleave(group, dim=1)
        self.mask = mask.unsqueeze(1)


class Scratch:
    """The runner's per-step buffers: allocated once, reused by every step, zeroed by `clear`.

    `index` rows are the step's token ids, positions, KV slots and logit rows; `hidden` is the
    residual stream `[rows, hidden]`. They grow (doubling; the old buffer zeroed before it is
    dropped) to the largest step seen and are never shrunk.
    """

    def __init__(self, hidden: int, dtype: torch.dtype, device: torch.device) -> None:
        """Start empty (the first step sizes the buffers)."""
        self.device = device
        self.index = torch.zeros((4, 0), dtype=torch.long, device=device)
        self.hidden = torch.zeros((0, hidden), dtype=dtype, device=device)

    def load(self, *rows: list[int]) -> tuple[torch.Tensor, ...]:
        """Copy the step's index lists into the buffer; return views of their used lengths."""
        need = max(len(r) for r in rows)
        if need > self.index.shape[1]:
            size = max(need, 2 * self.index.shape[1], 64)
            self.clear()
            self.index = torch.zeros((4, size), dtype=torch.long, device=self.device)
            self.hidden = torch.zeros((size, self.hidden.shape[1]), dtype=self.hidden.dtype,
                                      device=self.device)
        views = []
        for i, r in enumerate(rows):
            view = self.index[i, :len(r)]
            if r:
                view.copy_(torch.tensor(r, dtype=torch.long))
            views.append(view)
        return tuple(views)

    def clear(self) -> None:
        """Zero every buffer."""
        self.index.zero_()
        self.hidden.zero_()

    def is_zero(self) -> bool:
        """True when every buffer holds only zeros."""
        return not bool(self.index.any()) and not bool(self.hidden.any())


class ForwardPlan:
    """Index tensors for one forward (one engine step), built once and shared by every layer.

    Raises ProtocolError on construction when a chunk is empty, too long, or its block table does
    not cover it.
    """

    def __init__(  # noqa: PLR0913, PLR0917 - the pool geometry, passed positionally inside
        self,
        chunks: Sequence[ForwardChunk],
        block_size: int,
        num_blocks: int,
        max_len: int,
        group: int,
        scratch: Scratch,
    ) -> None:
        """Check and lay out `chunks` for a pool of `num_blocks` blocks of `block_size`."""
        device = scratch.device
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        self.num_logits: list[int] = []
        short: list[ShortChunk] = []
        self.long_chunks: list[LongChunk] = []
        for ch in chunks:
            n, start = len(ch.token_ids), ch.start_pos
            end = start + n
            nblk = -(-end // block_size)
            if n == 0 or start < 0 or end > max_len or not 0 <= ch.num_logits <= n:
                raise ProtocolError("bad forward chunk")
            table = list(ch.block_table[:nblk])
            if len(table) < nblk or min(table) < 0 or max(table) >= num_blocks:
                raise ProtocolError("block table does not cover the chunk")
            row0 = len(tokens)
            tokens.extend(ch.token_ids)
            pos = range(start, end)
            positions.extend(pos)
            slots.extend(table[p // block_size] * block_size + p % block_size for p in pos)
            logit_rows.extend(range(row0 + n - ch.num_logits, row0 + n))
            self.num_logits.append(ch.num_logits)
            if n <= SHORT_CHUNK:
                short.append(ShortChunk(row0, n, start, table))
                continue
            if start == 0:  # attends only to its own new K/V: causal, nothing to gather
                self.long_chunks.append(LongChunk(row0, n, None, end, None))
                continue
            # queries sit at the bottom-right of the key range
            kpos = torch.arange(end, device=device)
            mask = kpos[None, :] <= torch.arange(start, end, device=device)[:, None]
            blocks = torch.tensor(table, dtype=torch.long, device=device)
            self.long_chunks.append(LongChunk(row0, n, blocks, end, mask))
        self.total = len(tokens)
        self.tokens, self.positions, self.slots, self.logit_rows = scratch.load(
            tokens, positions, slots, logit_rows)
        self.short = [ShortBatch(g, block_size, group, device)
                      for g in group_by_length(short, block_size)]


GROUP_COST = 16  # one more padded SDPA call costs about as much as this many padded blocks


def group_by_length(short: list[ShortChunk], block_size: int) -> list[list[ShortChunk]]:
    """Split the short chunks into length groups that minimise padded KV blocks read.

    Sorted by context length, contiguous runs are chosen by dynamic programming with cost
    `len(run) * width * max_blocks(run) + GROUP_COST` per run, so a few long sequences do not
    pad every short one up to their length.
    """
    if not short:
        return []
    items = sorted(short, key=lambda s: s.length + s.start)
    need = [-(-(s.length + s.start) // block_size) for s in items]
    m = len(items)
    best = [0.0] + [float("inf")] * m
    cut = [0] * (m + 1)
    for j in range(1, m + 1):  # run items[i:j]; its longest member is items[j - 1]
        width = 0
        for i in range(j - 1, -1, -1):
            width = max(width, items[i].length)
            cost = best[i] + (j - i) * width * need[j - 1] + GROUP_COST
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = m
    while j > 0:
        groups.append(items[cut[j]:j])
        j = cut[j]
    return groups
