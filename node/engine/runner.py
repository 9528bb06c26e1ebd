"""The model runner: a Llama-family forward pass over one pre-allocated, zeroed, paged KV pool.

This module and `linear.py` (its matrix products) are the only parts of the engine that touch a
device. It implements the `ModelRunner` protocol of `batch.py`: one `forward` per engine step
computes every chunk of the step together.

How a step runs (varlen batching): the tokens of all chunks are flattened into one `[T, hidden]`
activation, so each linear map is a single GEMM for the whole step (on CPU through oneDNN with
weights prepacked once, see `linear.py`); K/V of the new tokens are written into the pool with
one `index_copy_` per layer; attention reads each sequence's KV back through its block table,
gathering whole per-head blocks into one buffer reused by every layer of the step. Short chunks
(decodes and speculative verification, up to `SHORT_CHUNK` tokens) are batched into padded,
masked attentions, one per length group (see `_group_by_length`); longer chunks run one SDPA
each (a chunk starting at position 0 attends to its fresh K/V without any gather). Logits are
computed only for the positions the chunks ask for.

The pool is head-major (`kv_heads` before blocks) so that a gather lands each (head, sequence)
slice contiguously, the layout batched matmuls and SDPA read fastest.

Invariants:
* The pool is ONE tensor `[layers, 2, kv_heads, num_blocks, block_size, head_dim]` allocated
  with `torch.zeros`; it is never reallocated, copied to the host, or written anywhere else.
* `zero_blocks` zeroes whole blocks, in every layer, K and V, in one `index_fill_`.
* Nothing about a request survives a `forward` call except what it wrote into its own blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from hushcc.errors import ConfigError, ProtocolError
from node.engine.linear import PackedLinear, make_linears

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.batch import ForwardChunk
    from node.engine.model import LlamaWeights


SHORT_CHUNK = 8  # chunks up to this long (decodes, draft verification) share padded attentions


@dataclass(frozen=True, slots=True)
class _Geometry:
    """The pool's shape and placement, as the step plans need it."""

    block_size: int
    num_blocks: int
    kv_heads: int
    group: int  # query heads per KV head
    max_len: int
    dtype: torch.dtype
    device: torch.device


class PagedRunner:
    """Runs a Llama-family model over a paged KV pool (implements `batch.ModelRunner`)."""

    def __init__(  # noqa: PLR0913 - sizes of the pool are all independent knobs
        self,
        weights: LlamaWeights,
        *,
        num_blocks: int,
        block_size: int = 16,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_model_len: int | None = None,
        prepack: bool | None = None,
    ) -> None:
        """Move the weights to `device` and allocate the zeroed KV pool.

        Args:
            weights: the model.
            num_blocks: blocks in the pool.
            block_size: tokens per block.
            device: torch device ("cpu", "cuda", ...).
            dtype: compute and KV dtype.
            max_model_len: longest sequence served (default: the config's maximum).
            prepack: use oneDNN prepacked linears (default: on CPU when they work; see
                `linear.py`).

        Raises:
            ConfigError: on non-positive sizes, or `prepack=True` where it cannot work.
        """
        if num_blocks <= 0 or block_size <= 0:
            raise ConfigError("num_blocks and block_size must be positive")
        c = weights.config
        self.config = c
        self.device = torch.device(device)
        self.dtype = dtype
        w = weights.to(self.device, dtype)
        self._embed, self._final_norm = w.embed, w.norm
        self._norms = [(lw.input_norm, lw.post_norm) for lw in w.layers]
        projections = [(lw.wqkv, lw.bqkv) for lw in w.layers]
        for name in ("wo", "w_gate_up", "w_down"):
            projections += [(getattr(lw, name), None) for lw in w.layers]
        linears = make_linears([*projections, (w.lm_head, None)], device=self.device,
                               dtype=dtype, prepack=prepack)
        del w, projections  # with prepacking, the unpacked projections are freed here
        n = c.num_layers
        self._qkv, self._o, self._gate_up, self._down = (
            linears[i * n:(i + 1) * n] for i in range(4))
        self._lm_head = linears[-1]
        self.prepacked = isinstance(self._lm_head, PackedLinear)
        self._block_size = block_size
        self._num_blocks = num_blocks
        self.max_model_len = min(max_model_len or c.max_position_embeddings,
                                 c.max_position_embeddings)
        self.kv_pool = torch.zeros(
            (c.num_layers, 2, c.num_kv_heads, num_blocks, block_size, c.head_dim),
            dtype=dtype, device=self.device)
        pos = torch.arange(self.max_model_len, dtype=torch.float32)
        freqs = torch.outer(pos, c.inv_freq())
        scale = c.rope_attention_scaling()
        self._cos = (freqs.cos() * scale).to(self.device, dtype)
        self._sin = (freqs.sin() * scale).to(self.device, dtype)
        self._q = c.num_heads * c.head_dim
        self._kv = c.num_kv_heads * c.head_dim
        self._scale = c.head_dim ** -0.5
        self._geometry = _Geometry(block_size, num_blocks, c.num_kv_heads,
                                   c.num_heads // c.num_kv_heads, self.max_model_len, dtype,
                                   self.device)

    @property
    def block_size(self) -> int:
        """Tokens per KV block."""
        return self._block_size

    @property
    def num_blocks(self) -> int:
        """Blocks in the pool."""
        return self._num_blocks

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        """Zero the given blocks in every layer, K and V, in one batched operation."""
        if not block_ids:
            return
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        self.kv_pool.index_fill_(3, idx, 0)

    def kv_pool_is_zero(self, block_ids: Sequence[int] | None = None) -> bool:
        """True when the given blocks (default: the whole pool) hold only zeros."""
        if block_ids is None:
            return not bool(self.kv_pool.any())
        if not block_ids:
            return True
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        return not bool(self.kv_pool.index_select(3, idx).any())

    @torch.inference_mode()
    def forward(self, chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        """Compute one step; return, per chunk, fp32 CPU logits `[num_logits, vocab]`.

        Args:
            chunks: the step's chunks (each sequence at most once).

        Returns:
            Logits for the trailing `num_logits` positions of each chunk.

        Raises:
            ProtocolError: when a chunk is empty, too long, or its block table is too short.
        """
        if not chunks:
            return []
        plan = _StepPlan(chunks, self._geometry)
        c = self.config
        x = self._embed.index_select(0, plan.tokens)
        cos, sin = self._cos[plan.positions], self._sin[plan.positions]
        heads = c.num_heads + c.num_kv_heads
        # one buffer for every KV gather of the step, reused by each layer (no per-layer malloc)
        gather_buf = torch.empty((plan.max_kv_rows, self._block_size * c.head_dim),
                                 dtype=self.dtype, device=self.device)
        for layer, (input_norm, post_norm) in enumerate(self._norms):
            h = _rms_norm(x, input_norm, c.rms_norm_eps)
            qkv = self._qkv[layer](h)
            qk = _rope(qkv[:, :self._q + self._kv].view(plan.total, heads, c.head_dim), cos, sin)
            q, k = qk[:, :c.num_heads], qk[:, c.num_heads:]
            v = qkv[:, self._q + self._kv:].view(plan.total, c.num_kv_heads, c.head_dim)
            pool = self.kv_pool[layer].view(2, c.num_kv_heads, -1, c.head_dim)
            pool[0].index_copy_(1, plan.slots, k.transpose(0, 1))
            pool[1].index_copy_(1, plan.slots, v.transpose(0, 1))
            attn = self._attention(layer, q, k, v, plan, gather_buf=gather_buf)
            x = x + self._o[layer](attn)
            h = _rms_norm(x, post_norm, c.rms_norm_eps)
            gate, up = self._gate_up[layer](h).chunk(2, dim=-1)
            x = x + self._down[layer](F.silu(gate) * up)
        if plan.logit_rows.numel() == 0:
            return [torch.empty(0, self.config.vocab_size) for _ in chunks]
        h = _rms_norm(x.index_select(0, plan.logit_rows), self._final_norm,
                      self.config.rms_norm_eps)
        logits = self._lm_head(h).float().cpu()
        return list(torch.split(logits, plan.num_logits))

    def _attention(  # noqa: PLR0913 - the step's tensors, passed from `forward` only
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: _StepPlan,
        *, gather_buf: torch.Tensor,
    ) -> torch.Tensor:
        """Attention of every query row over its sequence's cached KV; returns `[T, heads*d]`.

        `k`, `v` are this step's new keys/values (already written to the pool): a chunk that
        starts at position 0 attends to them directly; any other chunk reads its blocks.
        """
        c = self.config
        kvh, d, group = c.num_kv_heads, c.head_dim, c.num_heads // c.num_kv_heads
        out = torch.empty(plan.total, c.num_heads, d, dtype=q.dtype, device=q.device)
        # row (kv * kv_heads + head) * num_blocks + block of this view is one head's block
        pool_rows = self.kv_pool[layer].view(2 * kvh * self._num_blocks, -1)
        for sb in plan.short:
            kv = _gather(pool_rows, sb.kv_rows, gather_buf)
            out.index_copy_(0, sb.out_rows, self._short_attention(kv, q, sb))
        for row0, n, kv_rows, length, mask in plan.long_chunks:
            if kv_rows is None:
                kc, vc = k[row0:row0 + n].transpose(0, 1), v[row0:row0 + n].transpose(0, 1)
            else:
                kv = _gather(pool_rows, kv_rows, gather_buf).view(2, kvh, -1, d)
                kc, vc = kv[0, :, :length], kv[1, :, :length]  # [kv_heads, length, d]
            qc = q[row0:row0 + n].transpose(0, 1).unsqueeze(0)  # [1, h, n, d]
            o = F.scaled_dot_product_attention(
                qc, kc.unsqueeze(0), vc.unsqueeze(0),
                attn_mask=mask, is_causal=mask is None, scale=self._scale,
                enable_gqa=group > 1)
            out[row0:row0 + n] = o.squeeze(0).transpose(0, 1)
        return out.view(plan.total, -1)


    def _short_attention(self, kv: torch.Tensor, q: torch.Tensor, sb: _ShortBatch
                         ) -> torch.Tensor:
        """One padded attention for a length group of short chunks (decodes, draft verification).

        `kv` holds each chunk's KV gathered by whole blocks, `[2, kv_heads, chunks, keys, d]`,
        so each (head, chunk) slice is contiguous; padding is masked per query position. The
        query heads sharing a KV head ride along the query axis (`[kv_heads, B, n * group, d]`),
        so grouped-query attention needs no K/V expansion. On CPU two batched matmuls and a
        softmax beat SDPA's flash kernel here (a handful of queries against long keys); other
        devices use SDPA. Returns the valid rows `[R, heads, d]`.
        """
        c = self.config
        kvh, d, group = c.num_kv_heads, c.head_dim, c.num_heads // c.num_kv_heads
        b, width = sb.batch, sb.width
        kv = kv.view(2, kvh, b, -1, d)
        qs = q.index_select(0, sb.q_rows).view(b, width, kvh, group, d)
        qs = qs.permute(2, 0, 1, 3, 4).reshape(kvh, b, width * group, d)
        if self.device.type == "cpu":
            scores = torch.matmul(qs, kv[0].transpose(-1, -2)).mul_(self._scale)
            o = torch.matmul(torch.softmax(scores.add_(sb.mask), dim=-1), kv[1])
        else:
            o = F.scaled_dot_product_attention(qs, kv[0], kv[1], attn_mask=sb.mask,
                                               scale=self._scale)
        o = o.view(kvh, b, width, group, d).permute(1, 2, 0, 3, 4).reshape(b * width, -1, d)
        return o if sb.valid is None else o.index_select(0, sb.valid)


class _ShortBatch:
    """Index tensors of the padded short-chunk attention (see `PagedRunner._short_attention`)."""

    def __init__(self, short: list[tuple[int, int, int, list[int]]], geo: _Geometry) -> None:
        """Build from (first row, length, start position, block table) per short chunk."""
        device = geo.device
        self.batch = len(short)
        self.width = max(n for _, n, _, _ in short)
        nblk = max(len(t) for _, _, _, t in short)
        blocks = [t + [t[0]] * (nblk - len(t)) for _, _, _, t in short]
        self.kv_rows = _kv_rows(blocks, geo)
        # padded query slots repeat the chunk's last row (their outputs are dropped)
        q_rows = [r + min(i, n - 1) for r, n, _, _ in short for i in range(self.width)]
        q_pos = [s + min(i, n - 1) for _, n, s, _ in short for i in range(self.width)]
        self.q_rows = torch.tensor(q_rows, dtype=torch.long, device=device)
        self.out_rows = torch.tensor(
            [r + i for r, n, _, _ in short for i in range(n)], dtype=torch.long, device=device)
        valid = [j * self.width + i for j, (_, n, _, _) in enumerate(short) for i in range(n)]
        self.valid = None if len(valid) == len(q_rows) else torch.tensor(valid, device=device)
        kpos = torch.arange(nblk * geo.block_size, device=device)
        qpos = torch.tensor(q_pos, device=device).view(self.batch, self.width)
        mask = kpos[None, None, :] <= qpos[:, :, None]  # [B, width, keys]
        if self.width > 1 and geo.group > 1:
            mask = mask.repeat_interleave(geo.group, dim=1)
        # additive: 0 where a query may attend, -inf on padding and future positions
        self.mask = torch.zeros(mask.shape, dtype=geo.dtype, device=device).masked_fill_(
            ~mask, float("-inf"))


class _StepPlan:
    """Index tensors for one step, built once and shared by every layer."""

    def __init__(self, chunks: Sequence[ForwardChunk], geo: _Geometry) -> None:
        """Validate the chunks against the pool and build the step's index tensors.

        Raises:
            ProtocolError: when a chunk is empty, too long, or its block table is too short.
        """
        block_size, device = geo.block_size, geo.device
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        self.num_logits: list[int] = []
        short: list[tuple[int, int, int, list[int]]] = []
        self.long_chunks: list[
            tuple[int, int, torch.Tensor | None, int, torch.Tensor | None]] = []
        for ch in chunks:
            n, start = len(ch.token_ids), ch.start_pos
            end = start + n
            nblk = -(-end // block_size)
            if n == 0 or start < 0 or end > geo.max_len or not 0 <= ch.num_logits <= n:
                raise ProtocolError("bad forward chunk")
            table = list(ch.block_table[:nblk])
            if len(table) < nblk or min(table) < 0 or max(table) >= geo.num_blocks:
                raise ProtocolError("block table does not cover the chunk")
            row0 = len(tokens)
            tokens.extend(ch.token_ids)
            pos = range(start, end)
            positions.extend(pos)
            slots.extend(table[p // block_size] * block_size + p % block_size for p in pos)
            logit_rows.extend(range(row0 + n - ch.num_logits, row0 + n))
            self.num_logits.append(ch.num_logits)
            if n <= SHORT_CHUNK:
                short.append((row0, n, start, table))
                continue
            if start == 0:  # attends only to its own new K/V: causal, nothing to gather
                self.long_chunks.append((row0, n, None, end, None))
                continue
            # queries sit at the bottom-right of the key range
            kpos = torch.arange(end, device=device)
            mask = kpos[None, :] <= torch.arange(start, end, device=device)[:, None]
            self.long_chunks.append((row0, n, _kv_rows([table], geo), end, mask))
        self.total = len(tokens)
        self.tokens = torch.tensor(tokens, dtype=torch.long, device=device)
        self.positions = torch.tensor(positions, dtype=torch.long, device=device)
        self.slots = torch.tensor(slots, dtype=torch.long, device=device)
        self.logit_rows = torch.tensor(logit_rows, dtype=torch.long, device=device)
        self.short = [_ShortBatch(g, geo) for g in _group_by_length(short, block_size)]
        gathers = [sb.kv_rows for sb in self.short]
        gathers += [rows for _, _, rows, _, _ in self.long_chunks if rows is not None]
        self.max_kv_rows = max((len(rows) for rows in gathers), default=0)


def _kv_rows(tables: list[list[int]], geo: _Geometry) -> torch.Tensor:
    """Rows of a layer's `[2 * kv_heads * num_blocks, block]` pool view, for `tables`' blocks.

    In the order `[K/V, head, table, block]`: gathered, they view as
    `[2, kv_heads, tables, keys, d]`, each (head, table) slice contiguous.
    """
    blocks = torch.tensor(tables, dtype=torch.long, device=geo.device).view(1, -1)
    heads = torch.arange(2 * geo.kv_heads, dtype=torch.long, device=geo.device).view(-1, 1)
    return (heads * geo.num_blocks + blocks).view(-1)


def _gather(pool_rows: torch.Tensor, rows: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """`pool_rows[rows]` written into the front of the step's reusable buffer.

    Gathering along dim 0 of a 2-D view copies whole contiguous blocks (about 5x faster here
    than `index_select` on the pool's block dimension), and the reused buffer saves a fresh
    multi-megabyte allocation, with its page faults, per layer.
    """
    return torch.index_select(pool_rows, 0, rows, out=buf[:len(rows)])


GROUP_COST = 16  # one more padded SDPA call costs about as much as this many padded blocks


def _group_by_length(
    short: list[tuple[int, int, int, list[int]]], block_size: int
) -> list[list[tuple[int, int, int, list[int]]]]:
    """Split the short chunks into length groups that minimise padded KV blocks read.

    Sorted by context length, contiguous runs are chosen by dynamic programming with cost
    `len(run) * width * max_blocks(run) + GROUP_COST` per run, so a few long sequences do not
    pad every short one up to their length.
    """
    if not short:
        return []
    items = sorted(short, key=lambda s: s[1] + s[2])
    need = [-(-(n + st) // block_size) for _, n, st, _ in items]
    m = len(items)
    best = [0.0] + [float("inf")] * m
    cut = [0] * (m + 1)
    for j in range(1, m + 1):  # run items[i:j]; its longest member is items[j - 1]
        width = 0
        for i in range(j - 1, -1, -1):
            width = max(width, items[i][1])
            cost = best[i] + (j - i) * width * need[j - 1] + GROUP_COST
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = m
    while j > 0:
        groups.append(items[cut[j]:j])
        j = cut[j]
    return groups


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype != torch.float32:  # normalise in fp32 like the reference, scale in the model dtype
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on `[T, heads, d]` with `cos`/`sin` `[T, d/2]`."""
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def tiny_runner(
    *, num_blocks: int = 64, block_size: int = 4, seed: int = 0, **config: int | bool
) -> PagedRunner:
    """A runner over a tiny random Llama model, for tests of the engine (CPU, fp32).

    Args:
        num_blocks: blocks in the pool.
        block_size: tokens per block.
        seed: weight seed.
        **config: overrides of `model.tiny_hf_config` (vocab_size, num_hidden_layers, ...).

    Returns:
        The runner.
    """
    from node.engine.model import ModelConfig, random_weights, tiny_hf_config  # noqa: PLC0415

    mc = ModelConfig.from_hf(tiny_hf_config(**config))
    return PagedRunner(random_weights(mc, seed), num_blocks=num_blocks, block_size=block_size)
