"""Decode steps replayed from CUDA graphs captured once at start-up, over static buffers.

A decode step (every chunk one token asking for its logits, at most `max_batch` chunks) runs
from the graph of the smallest bucket that holds it: batch sizes 1, 2, 4, ... and block-table
widths 1, 2, 4, ... blocks; prefill and mixed steps run eagerly. Attention inside a graph is
the `padded` backend (one SDPA per layer; the key mask is computed in the graph from each row's
context length). On a device without CUDA graphs the same static-buffer path runs eagerly
(`capture=False`): the CPU tests check it that way, the capture itself only on CUDA.

Invariants:
* A graph's inputs are static buffers: token ids, positions, KV slots, block-table rows and
  context lengths. A step copies its values in, replays, and reads the static logits, which
  are copied out before any other replay (graphs share one memory pool, replayed one at a time).
* Padding rows (bucket larger than the batch) write their K/V into the pool's trash block
  (index `num_blocks`, never handed out by the block manager) and attend to it alone, so a
  replay writes K/V only into the slots of the step's own sequences and the trash block:
  zero-on-free is unchanged.
* `scrub` (the engine going idle) sets every static input to neutral values (token 0 at
  position 0 into the trash block) and replays every graph once: that overwrites every
  intermediate buffer of the graphs' memory pool with request-free values. The caller then
  zeroes the trash block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

from node.engine.attention import PaddedBatch, padded_attention

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.attention import ChunkSpan
    from node.engine.batch import ForwardChunk

Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class StepRows(NamedTuple):
    """The row-indexed inputs of one step on the device."""

    tokens: torch.Tensor  # token id per row
    positions: torch.Tensor  # position per row
    slots: torch.Tensor  # pool slot its K/V goes to
    logit_rows: torch.Tensor | None  # rows whose logits are wanted (None: every row)


class GraphHost(Protocol):
    """What a decode graph needs from the runner."""

    device: torch.device
    dtype: torch.dtype

    @property
    def block_size(self) -> int:
        """Tokens per KV block."""
        ...

    @property
    def num_blocks(self) -> int:
        """Blocks in the pool (the trash block is number `num_blocks`)."""
        ...

    def hidden_size(self) -> int:
        """Width of the residual stream."""
        ...

    def layer_pool(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s pool `[2, num_blocks + 1, bs, kv_heads, d]` (trash block included)."""
        ...

    def compute(self, x: torch.Tensor, rows: StepRows, attend: Attend) -> torch.Tensor:
        """The model over rows `x`; logits of `rows.logit_rows`."""
        ...


def buckets(limit: int) -> list[int]:
    """1, 2, 4, ... up to the first power of two >= `limit`."""
    out = [1]
    while out[-1] < limit:
        out.append(out[-1] * 2)
    return out


class DecodeGraph:
    """One (batch, table width) bucket: its static buffers and, on CUDA, its captured graph."""

    def __init__(self, host: GraphHost, batch: int, nblk: int, *, capture: bool,
                 pool: tuple[int, int] | None) -> None:
        """Allocate the static buffers (neutral) and capture the graph when `capture`."""
        dev, bs = host.device, host.block_size
        self.host, self.batch, self.nblk = host, batch, nblk
        self.trash_slot = host.num_blocks * bs
        self.tokens = torch.zeros(batch, dtype=torch.long, device=dev)
        self.positions = torch.zeros(batch, dtype=torch.long, device=dev)
        self.slots = torch.zeros(batch, dtype=torch.long, device=dev)
        self.ctx = torch.zeros(batch, dtype=torch.long, device=dev)
        self.hidden = torch.zeros(batch, host.hidden_size(), dtype=host.dtype, device=dev)
        self.kpos = torch.arange(nblk * bs, device=dev)
        self.pb = PaddedBatch.for_decode(batch, nblk, dev)
        self.neutral()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        if capture:
            side = torch.cuda.Stream(dev)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                self._body()  # warm-up (kernel selection, workspace) before capture
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):  # type: ignore[arg-type]
                self.logits = self._body()
            self.graph = graph

    def neutral(self) -> None:
        """Token 0 at position 0 in every row, written into and reading the trash block."""
        self.tokens.zero_()
        self.positions.zero_()
        self.slots.fill_(self.trash_slot)
        self.ctx.fill_(1)
        self.pb.blocks.fill_(self.host.num_blocks)

    def _body(self) -> torch.Tensor:
        self.pb.mask = (self.kpos[None, :] < self.ctx[:, None]).view(self.batch, 1, 1, -1)
        host, pb = self.host, self.pb

        def attend(layer: int, q: torch.Tensor, _k: torch.Tensor, _v: torch.Tensor
                   ) -> torch.Tensor:
            return padded_attention(q, host.layer_pool(layer), pb, _scale(q)).view(q.shape[0], -1)

        rows = StepRows(self.tokens, self.positions, self.slots, None)
        return host.compute(self.hidden, rows, attend)

    def run(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
            spans: Sequence[ChunkSpan]) -> torch.Tensor:
        """Load the step (rows `0..n-1`, the rest neutral), replay; logits `[n, vocab]`."""
        n = len(spans)
        self.neutral()
        self.tokens[:n].copy_(tokens)
        self.positions[:n].copy_(positions)
        self.slots[:n].copy_(slots)
        trash = self.host.num_blocks
        rows = [s.table + [trash] * (self.nblk - len(s.table)) for s in spans]
        self.pb.blocks[:n * self.nblk].copy_(torch.tensor(rows, dtype=torch.long).view(-1))
        self.ctx[:n].copy_(torch.tensor([s.start + 1 for s in spans], dtype=torch.long))
        if self.graph is None:
            return self._body()[:n]
        self.graph.replay()
        assert self.logits is not None
        return self.logits[:n]


def _scale(q: torch.Tensor) -> float:
    return float(q.shape[-1] ** -0.5)


class DecodeGraphs:
    """Every bucket's `DecodeGraph`, captured at start-up (see the module docstring)."""

    def __init__(self, host: GraphHost, max_batch: int, max_len: int, *, capture: bool) -> None:
        """Capture (or, without `capture`, only allocate) a graph per bucket."""
        self.capture = capture
        pool = torch.cuda.graph_pool_handle() if capture else None
        self.batches = buckets(max_batch)
        self.widths = buckets(-(-max_len // host.block_size))
        # largest first: the shared pool is sized by the biggest graph, the rest fit inside it
        self.graphs = {(b, w): DecodeGraph(host, b, w, capture=capture, pool=pool)
                       for b in reversed(self.batches) for w in reversed(self.widths)}

    def pick(self, chunks: Sequence[ForwardChunk], block_size: int) -> DecodeGraph | None:
        """The bucket for a decode step, or None (not a decode step, or too big)."""
        if len(chunks) > self.batches[-1]:
            return None
        need = 0
        for ch in chunks:
            if len(ch.token_ids) != 1 or ch.num_logits != 1:
                return None
            need = max(need, ch.start_pos // block_size + 1)
        if need > self.widths[-1]:
            return None
        b = next(x for x in self.batches if x >= len(chunks))
        w = next(x for x in self.widths if x >= need)
        return self.graphs[b, w]

    def scrub(self) -> None:
        """Replay every graph on neutral inputs (overwrites their intermediates)."""
        for g in self.graphs.values():
            g.neutral()
            if g.graph is not None:
                g.graph.replay()
            else:
                g.hidden.zero_()
