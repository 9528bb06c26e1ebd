"""How one forward lays out its tokens: the index tensors every layer of the runner shares.

`ForwardPlan` flattens a step's chunks into rows (token ids, positions, KV slots, logit rows),
checks each chunk against the pool, and builds the attention layout of the runner's backend
(`attention.py`): one `FlexLayout` (flex), one `PaddedBatch` over every chunk (padded), or short
chunks (decodes, draft verification) batched by length group into `PaddedBatch`es
(`group_by_length`) plus long ones attended one SDPA each (`LongChunk`) (grouped).

Invariants:
* A chunk is checked before anything is computed: non-empty, inside the model length, its
  block table covering every position it writes with blocks of the pool (ProtocolError).
* The row-indexed tensors and the attention's K/V gathers live in `Scratch`, buffers allocated
  once and reused by every step; `Scratch.clear` zeroes them (the engine asks for it when it
  goes idle). Every other tensor of a plan is dropped with the plan at the end of the forward.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from hushcc.errors import ProtocolError
from node.engine.attention import ChunkSpan, FlexLayout, PaddedBatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.batch import ForwardChunk

SHORT_CHUNK = 8  # `grouped`: chunks up to this long (decodes, drafts) share padded SDPAs


class LongChunk(NamedTuple):
    """`grouped`: a chunk attended on its own."""

    row0: int  # its first row in the step's flattened tokens
    length: int  # tokens in the chunk
    blocks: torch.Tensor | None  # blocks to gather its KV from; None: starts at 0, uses fresh K/V
    kv_len: int  # keys attended (start + length)
    mask: torch.Tensor | None  # [length, kv_len] causal mask; None: plain causal


_STEP_DIMS = (1, 0, 0)  # the axis along which a step fills `index`, `hidden` and `kv`


class Scratch:
    """The runner's per-step buffers: allocated once, reused by every step, zeroed by `clear`.

    `index` rows are the step's token ids, positions, KV slots and logit rows; `hidden` is the
    residual stream `[rows, hidden]` (`hidden_rows`); `kv` holds the blocks one attention call
    gathers from the pool (`gather`; every gather of every layer reuses it). They grow
    (doubling; the old buffer zeroed before it is dropped) to the largest step seen and are
    never shrunk.

    After each step (`end_step`) every buffer holds that step's data only: whatever an earlier,
    larger step left past this step's extent is zeroed, so a request's token ids, activations and
    gathered K/V survive it by at most one step under load, and `clear` (the idle engine's call)
    zeroes the rest.

    Why `kv` is a buffer and not a temporary: a decode step gathers every sequence's blocks in
    every layer (SmolLM2, 16 sequences of 300 tokens: about 200 MB a step). As temporaries they
    are allocated and freed 30 times a step, and under the node's memory hygiene glibc fills
    each of them twice (on allocation and on free).
    """

    def __init__(self, hidden: int, dtype: torch.dtype, device: torch.device) -> None:
        """Start empty (the first step sizes the buffers)."""
        self.device = device
        self.index = torch.zeros((4, 0), dtype=torch.long, device=device)
        self.hidden = torch.zeros((0, hidden), dtype=dtype, device=device)
        self.kv = torch.zeros(0, dtype=dtype, device=device)
        self._used = [0, 0, 0]  # this step's extent of index, hidden and kv along `_STEP_DIMS`
        self._dirty = [0, 0, 0]  # how far each may hold data of an earlier step

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
            if len(r) < need:  # a shorter row (logit rows) leaves nothing past its end
                self.index[i, len(r):need].zero_()
            views.append(view)
        self._used[0] = max(self._used[0], need)
        return tuple(views)

    def hidden_rows(self, rows: int) -> torch.Tensor:
        """The residual-stream buffer's first `rows` rows (the step overwrites all of them)."""
        self._used[1] = max(self._used[1], rows)
        return self.hidden[:rows]

    def gather(self, pool: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """`pool.index_select(1, blocks)` written into `kv`: valid until the next gather."""
        shape = (pool.shape[0], blocks.numel(), *pool.shape[2:])
        need = math.prod(shape)
        if need > self.kv.numel():
            self.kv.zero_()
            self.kv = torch.zeros(max(need, 2 * self.kv.numel()), dtype=pool.dtype,
                                  device=self.device)
            self._dirty[2] = 0
        self._used[2] = max(self._used[2], need)
        return torch.index_select(pool, 1, blocks, out=self.kv[:need].view(shape))

    def end_step(self) -> None:
        """Zero what earlier steps left past this step's extent in each buffer."""
        for buffer, dim, used, dirty in zip(self._buffers(), _STEP_DIMS, self._used, self._dirty,
                                            strict=True):
            if dirty > used:
                buffer.narrow(dim, used, dirty - used).zero_()
        self._dirty, self._used = self._used, [0, 0, 0]

    def clear(self) -> None:
        """Zero every buffer."""
        for buffer in self._buffers():
            buffer.zero_()
        self._used, self._dirty = [0, 0, 0], [0, 0, 0]

    def is_zero(self) -> bool:
        """True when every buffer holds only zeros."""
        return not any(bool(t.any()) for t in self._buffers())

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.index, self.hidden, self.kv


class ForwardPlan:
    """Index tensors for one forward (one engine step), built once and shared by every layer.

    `backend` (see `attention.py`) decides the attention layout: `flex` -> `self.flex`, `padded`
    -> one `PaddedBatch` in `self.batches`, `grouped` -> `self.batches` per length group of
    short chunks plus `self.long_chunks`.

    Raises ProtocolError on construction when a chunk is empty, too long, or its block table does
    not cover it.
    """

    def __init__(  # noqa: PLR0913 - the pool geometry and the backend
        self,
        chunks: Sequence[ForwardChunk],
        *,
        block_size: int,
        num_blocks: int,
        max_len: int,
        group: int,
        scratch: Scratch,
        backend: str = "grouped",
    ) -> None:
        """Check and lay out `chunks` for a pool of `num_blocks` blocks of `block_size`."""
        device = scratch.device
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        self.num_logits: list[int] = []
        spans: list[ChunkSpan] = []
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
            spans.append(ChunkSpan(row0, n, start, table))
        self.total = len(tokens)
        self.tokens, self.positions, self.slots, self.logit_rows = scratch.load(
            tokens, positions, slots, logit_rows)
        self.spans = spans
        self.flex: FlexLayout | None = None
        self.batches: list[PaddedBatch] = []
        self.long_chunks: list[LongChunk] = []
        if not spans or backend == "none":  # "none": the caller attends (decode graphs)
            return
        if backend == "flex":
            self.flex = FlexLayout(spans, self.total, block_size, num_blocks, device)
        elif backend == "padded":
            self.batches = [PaddedBatch(spans, block_size, group, device)]
        else:
            short = [s for s in spans if s.length <= SHORT_CHUNK]
            self.long_chunks = [_long_chunk(s, device) for s in spans if s.length > SHORT_CHUNK]
            self.batches = [PaddedBatch(g, block_size, group, device)
                            for g in group_by_length(short, block_size)]


def _long_chunk(s: ChunkSpan, device: torch.device) -> LongChunk:
    end = s.start + s.length
    if s.start == 0:  # attends only to its own new K/V: causal, nothing to gather
        return LongChunk(s.row0, s.length, None, end, None)
    # queries sit at the bottom-right of the key range
    kpos = torch.arange(end, device=device)
    mask = kpos[None, :] <= torch.arange(s.start, end, device=device)[:, None]
    blocks = torch.tensor(s.table, dtype=torch.long, device=device)
    return LongChunk(s.row0, s.length, blocks, end, mask)


GROUP_COST = 16  # one more padded SDPA call costs about as much as this many padded blocks


def group_by_length(short: list[ChunkSpan], block_size: int) -> list[list[ChunkSpan]]:
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
