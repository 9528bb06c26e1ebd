"""Attention of one engine step over the paged KV pool, by one of three backends.

* `flex`: ONE call per layer over every chunk of the step (prefill, chunked prefill, decode,
  draft verification), reading K/V in place from the pool through the block tables: torch's
  FlexAttention with the pool viewed as one long key sequence `[1, kv_heads, blocks * bs, d]`,
  a mask that maps each physical slot back to its logical position in the query's sequence,
  and a block-sparse `BlockMask` (one KV tile per pool block) built directly from the block
  tables, so the kernel loads only the blocks a query tile's sequences own. Compiled (Triton) on
  CUDA; eager (torch's reference implementation, which materialises the scores over the whole
  pool) elsewhere, which is for tests only.
* `padded`: ONE padded SDPA per layer over every chunk: each chunk's blocks gathered, its query
  rows padded to the widest chunk and masked per position (pure torch, any device).
* `grouped`: decodes and draft verifications batched into padded SDPAs per length group, longer
  chunks one SDPA each (pure torch; the CPU path, chosen by bench/engine.py's figures).

Invariants:
* Every backend computes the same function: for query row r of a chunk at position p, softmax
  attention over exactly the keys at positions 0..p of r's sequence, read from the blocks of
  its table (checked against transformers' logits for each backend in tests).
* A block shared by two sequences of the step (prefix cache) is visible to both: the flex mask
  maps (sequence, physical block) -> logical block, never physical block -> one owner.
* Index tensors here are per-step temporaries, dropped with the plan; no K/V is copied out of
  the pool except by the `padded`/`grouped` gathers, into the buffer `gather` gives (the
  runner's `forward_plan.Scratch.gather`: one buffer reused by every gather and zeroed when the
  engine goes idle; by default a temporary freed at the step's end).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from torch.nn.attention.flex_attention import BlockMask

    Gather = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (pool, block ids) -> blocks

BACKENDS = ("flex", "padded", "grouped")
Q_TILE = 16  # query rows per flex query tile (the kernel's BLOCK_M)


class ChunkSpan(NamedTuple):
    """Where one chunk sits in the step and which blocks it reads."""

    row0: int  # its first row in the step's flattened tokens
    length: int  # tokens in the chunk
    start: int  # position of its first token
    table: list[int]  # the blocks covering positions [0, start + length)


def resolve_backend(requested: str | None, device: torch.device, block_size: int) -> str:
    """The backend to use: `requested`, or the default for the device.

    Default: `flex` on CUDA when the pool's block size suits its kernel (a power of two >= 16)
    and FlexAttention compiles there (`flex_compiles`), else `padded`; `grouped` on CPU, the
    fastest there by bench/attention.py (2-core EPYC, SmolLM2, 32 requests: grouped 38 tok/s,
    padded 11; eager flex materialises scores over the whole pool and is not a contender).

    Raises:
        ConfigError: an unknown backend name.
    """
    if requested is not None:
        if requested not in BACKENDS:
            raise ConfigError(f"unknown attention backend (one of {', '.join(BACKENDS)})")
        return requested
    if device.type != "cuda":
        return "grouped"
    pow2 = block_size >= Q_TILE and block_size & (block_size - 1) == 0
    return "flex" if pow2 and flex_compiles(device) else "padded"


_FLEX: dict[str, Callable[..., torch.Tensor]] = {}


def _flex_fn(device: torch.device) -> Callable[..., torch.Tensor]:
    """FlexAttention: compiled once per process on CUDA, eager elsewhere (tests)."""
    from torch.nn.attention.flex_attention import flex_attention  # noqa: PLC0415

    if device.type != "cuda":
        return flex_attention
    if "cuda" not in _FLEX:
        _FLEX["cuda"] = torch.compile(flex_attention, dynamic=True)
    return _FLEX["cuda"]


def flex_compiles(device: torch.device) -> bool:
    """True when compiled FlexAttention runs on `device` and agrees with SDPA (start-up probe)."""
    try:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 2, 32, 64, generator=gen).to(device, torch.bfloat16)
                   for _ in range(3))
        got = _flex_fn(device)(q, k, v)
        want = F.scaled_dot_product_attention(q, k, v)
        return bool(torch.allclose(got.float(), want.float(), atol=2e-2, rtol=2e-2))
    except Exception:  # noqa: BLE001 - any failure (no Triton, no compiler) means: not usable
        return False


class FlexLayout:
    """The step's FlexAttention metadata, built once and shared by every layer.

    Rows are the step's flattened query tokens; keys are the pool's slots `block * bs + offset`.
    `inv[c, b]` is block b's index in chunk c's table (-1: not its block). Query tile t (rows
    `[t * Q_TILE, (t + 1) * Q_TILE)`) lists the blocks its rows' sequences own up to the tile's
    last position in each: a superset of the keys its rows attend, so the kernel skips the rest.
    """

    def __init__(self, spans: Sequence[ChunkSpan], total: int, block_size: int,
                 num_blocks: int, device: torch.device) -> None:
        """Lay out `spans` (the step's chunks, rows contiguous in order) over the pool."""
        from torch.nn.attention.flex_attention import BlockMask  # noqa: PLC0415

        bs = block_size
        q_seq = [0] * total
        q_pos = [0] * total
        tiles: list[dict[int, None]] = [{} for _ in range(-(-total // Q_TILE))]
        width = max(len(s.table) for s in spans)
        tables = []
        for c, s in enumerate(spans):
            for i in range(s.length):
                q_seq[s.row0 + i] = c
                q_pos[s.row0 + i] = s.start + i
            tables.append(s.table + [num_blocks] * (width - len(s.table)))
            for t in range(s.row0 // Q_TILE, (s.row0 + s.length - 1) // Q_TILE + 1):
                last = min(s.row0 + s.length, (t + 1) * Q_TILE) - 1 - s.row0 + s.start
                tiles[t].update(dict.fromkeys(s.table[:last // bs + 1]))
        most = max(len(t) for t in tiles)
        kv_idx = [[*t, *[0] * (most - len(t))] for t in tiles]
        self.q_seq = torch.tensor(q_seq, dtype=torch.long, device=device)
        self.q_pos = torch.tensor(q_pos, dtype=torch.long, device=device)
        table = torch.tensor(tables, dtype=torch.long, device=device)
        inv = torch.full((len(spans), num_blocks + 1), -1, dtype=torch.long, device=device)
        inv.scatter_(1, table, torch.arange(width, device=device).expand(len(spans), -1))
        self.inv = inv[:, :num_blocks]
        self.block_size = bs
        self.block_mask: BlockMask = BlockMask.from_kv_blocks(
            torch.tensor([[[len(t) for t in tiles]]], dtype=torch.int32, device=device),
            torch.tensor([[kv_idx]], dtype=torch.int32, device=device),
            BLOCK_SIZE=(Q_TILE, bs), mask_mod=self.mask_mod,
            seq_lengths=(total, num_blocks * bs), compute_q_blocks=False)

    def mask_mod(self, _b: torch.Tensor, _h: torch.Tensor, q_idx: torch.Tensor,
                 kv_idx: torch.Tensor) -> torch.Tensor:
        """True where query row `q_idx` attends pool slot `kv_idx`."""
        logical = self.inv[self.q_seq[q_idx], kv_idx // self.block_size]
        pos = logical * self.block_size + kv_idx % self.block_size
        return (logical >= 0) & (pos <= self.q_pos[q_idx])


def flex_attention(q: torch.Tensor, pool: torch.Tensor, layout: FlexLayout, scale: float
                   ) -> torch.Tensor:
    """One FlexAttention call: `q [T, heads, d]` over `pool [2, blocks, bs, kv_heads, d]`.

    Returns `[T, heads * d]`. K/V are read in place (strided views of the pool, no copy).
    """
    t, heads, d = q.shape
    kvh = pool.shape[-2]
    k, v = (pool[i].view(-1, kvh, d).transpose(0, 1).unsqueeze(0) for i in range(2))
    opts = {"FORCE_USE_FLEX_ATTENTION": True, "BLOCK_M": Q_TILE, "BLOCK_N": layout.block_size}
    with warnings.catch_warnings():  # eager (non-CUDA) use is for tests: its warning is known
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
        out = _flex_fn(q.device)(
            q.transpose(0, 1).unsqueeze(0), k, v, block_mask=layout.block_mask, scale=scale,
            enable_gqa=heads != kvh, kernel_options=opts if q.is_cuda else None)
    return out.squeeze(0).transpose(0, 1).reshape(t, heads * d)


class PaddedBatch:
    """Index tensors of one padded, masked SDPA over a set of chunks."""

    def __init__(self, spans: Sequence[ChunkSpan], block_size: int, group: int,
                 device: torch.device) -> None:
        """Build from the chunks (`group`: query heads per KV head)."""
        self.batch = len(spans)
        self.width = max(s.length for s in spans)
        nblk = max(len(s.table) for s in spans)
        blocks = [s.table + [s.table[0]] * (nblk - len(s.table)) for s in spans]
        self.blocks = torch.tensor(blocks, dtype=torch.long, device=device).view(-1)
        # padded query slots repeat the chunk's last row (their outputs are dropped)
        w = self.width
        q_rows = [s.row0 + min(i, s.length - 1) for s in spans for i in range(w)]
        q_pos = [s.start + min(i, s.length - 1) for s in spans for i in range(w)]
        self.q_rows = torch.tensor(q_rows, dtype=torch.long, device=device)
        out_rows = [s.row0 + i for s in spans for i in range(s.length)]
        self.out_rows = torch.tensor(out_rows, dtype=torch.long, device=device)
        valid = [j * w + i for j, s in enumerate(spans) for i in range(s.length)]
        self.valid = None if len(valid) == len(q_rows) else torch.tensor(valid, device=device)
        # the output rows are the step's rows 0..R-1 in order: no scatter needed
        self.in_order = self.valid is None and out_rows == list(range(len(out_rows)))
        kpos = torch.arange(nblk * block_size, device=device)
        qpos = torch.tensor(q_pos, device=device).view(self.batch, w)
        mask = kpos[None, None, :] <= qpos[:, :, None]  # [B, width, keys]
        if w > 1 and group > 1:
            mask = mask.repeat_interleave(group, dim=1)
        self.mask = mask.unsqueeze(1)


    @classmethod
    def for_decode(cls, batch: int, nblk: int, device: torch.device) -> PaddedBatch:
        """Static buffers of a decode batch (one query row per chunk; `graphs.py` fills them).

        `blocks` holds `nblk` block ids per row and `mask` is set by the caller.
        """
        pb = cls.__new__(cls)
        pb.batch, pb.width = batch, 1
        pb.blocks = torch.zeros(batch * nblk, dtype=torch.long, device=device)
        pb.q_rows = torch.arange(batch, device=device)
        pb.out_rows = pb.q_rows
        pb.valid, pb.in_order = None, True
        pb.mask = torch.ones(batch, 1, 1, nblk, dtype=torch.bool, device=device)
        return pb


def gather_blocks(pool: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Blocks `blocks` of a layer's pool `[2, blocks, bs, kv_heads, d]`, as a new tensor."""
    return pool.index_select(1, blocks)


def padded_attention(q: torch.Tensor, pool: torch.Tensor, pb: PaddedBatch, scale: float,
                     gather: Gather = gather_blocks) -> torch.Tensor:
    """One padded SDPA for a batch of chunks; returns the valid rows `[R, heads, d]`.

    Each chunk's KV is gathered by whole blocks (`gather(pool, blocks)`, read only until this
    returns) and masked per query position. The query heads sharing a KV head ride along the
    query axis (`[B, kv_heads, n * group, d]`), so grouped-query attention needs no K/V
    expansion.
    """
    _, heads, d = q.shape
    kvh = pool.shape[-2]
    group, b, width = heads // kvh, pb.batch, pb.width
    kv = gather(pool, pb.blocks).view(2, b, -1, kvh, d)
    qs = q.index_select(0, pb.q_rows).view(b, width, kvh, group, d)
    qs = qs.permute(0, 2, 1, 3, 4).reshape(b, kvh, width * group, d)
    o = F.scaled_dot_product_attention(
        qs, kv[0].transpose(1, 2), kv[1].transpose(1, 2), attn_mask=pb.mask, scale=scale)
    o = o.view(b, kvh, width, group, d).permute(0, 2, 1, 3, 4).reshape(b * width, -1, d)
    return o if pb.valid is None else o.index_select(0, pb.valid)
