"""The model runner: a Llama-family forward pass over one pre-allocated, zeroed, paged KV pool.

This module and `linear.py` (its matrix products) are the only parts of the engine that touch a
device. It implements the `ModelRunner` protocol of `batch.py`: one `forward` per engine step
computes every chunk of the step together.

How a step runs (varlen batching): the tokens of all chunks are flattened into one `[T, hidden]`
activation, so each linear map is a single GEMM for the whole step (on CPU through oneDNN with
weights prepacked once, see `linear.py`); K/V of the new tokens are written into the pool with
one `index_copy_` per layer; attention reads each sequence's KV back through its block table
(whole blocks gathered with `index_select`): short chunks (decodes and speculative
verification, up to `SHORT_CHUNK` tokens) are batched into padded, masked SDPA calls, one per
length group (see `_group_by_length`); longer chunks run one SDPA each (a chunk starting at
position 0 attends to its fresh K/V without any gather). Logits are computed only for the
positions the chunks ask for.

Invariants:
* The pool is ONE tensor `[layers, 2, num_blocks, block_size, kv_heads, head_dim]` allocated
  with `torch.zeros`; it is never reallocated, copied to the host, or written anywhere else.
* `zero_blocks` zeroes whole blocks, in every layer, K and V, in one `index_fill_`.
* Nothing about a request survives a `forward` call except what it wrote into its own blocks
  and the last step's per-step buffers (`_Scratch`: index rows and residual stream, allocated
  once and reused), which `clear_scratch` zeroes when the engine goes idle. Every other tensor
  of a step is a temporary freed at its end; under the node's memory hygiene (`node/hygiene.py`)
  glibc overwrites freed memory, so those leave nothing behind either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from hushcc.errors import ConfigError, ProtocolError
from node.engine.linear import PackedLinear, make_linears

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.batch import ForwardChunk
    from node.engine.model import LlamaWeights


SHORT_CHUNK = 8  # chunks up to this long (decodes, draft verification) share padded SDPAs


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
            (c.num_layers, 2, num_blocks, block_size, c.num_kv_heads, c.head_dim),
            dtype=dtype, device=self.device)
        pos = torch.arange(self.max_model_len, dtype=torch.float32)
        freqs = torch.outer(pos, c.inv_freq())
        scale = c.rope_attention_scaling()
        self._cos = (freqs.cos() * scale).to(self.device, dtype)
        self._sin = (freqs.sin() * scale).to(self.device, dtype)
        self._q = c.num_heads * c.head_dim
        self._kv = c.num_kv_heads * c.head_dim
        self._scale = c.head_dim ** -0.5
        self._scratch = _Scratch(c.hidden_size, dtype, self.device)

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
        self.kv_pool.index_fill_(2, idx, 0)

    @torch.inference_mode()
    def clear_scratch(self) -> None:
        """Zero the per-step buffers (token ids, positions, activations of the last step).

        The engine calls this when it goes idle, so nothing of the last request stays in them.
        """
        self._scratch.clear()

    @torch.inference_mode()
    def scratch_is_zero(self) -> bool:
        """True when the per-step buffers hold only zeros."""
        return self._scratch.is_zero()

    def kv_pool_is_zero(self, block_ids: Sequence[int] | None = None) -> bool:
        """True when the given blocks (default: the whole pool) hold only zeros."""
        if block_ids is None:
            return not bool(self.kv_pool.any())
        if not block_ids:
            return True
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        return not bool(self.kv_pool.index_select(2, idx).any())

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
        plan = _StepPlan(chunks, self._block_size, self._num_blocks, self.max_model_len,
                         self.config.num_heads // self.config.num_kv_heads, self._scratch)
        c = self.config
        x = self._scratch.hidden[:plan.total]
        torch.index_select(self._embed, 0, plan.tokens, out=x)
        cos, sin = self._cos[plan.positions], self._sin[plan.positions]
        heads = c.num_heads + c.num_kv_heads
        for layer, (input_norm, post_norm) in enumerate(self._norms):
            h = _rms_norm(x, input_norm, c.rms_norm_eps)
            qkv = self._qkv[layer](h)
            qk = _rope(qkv[:, :self._q + self._kv].view(plan.total, heads, c.head_dim), cos, sin)
            q, k = qk[:, :c.num_heads], qk[:, c.num_heads:]
            v = qkv[:, self._q + self._kv:].view(plan.total, c.num_kv_heads, c.head_dim)
            pool = self.kv_pool[layer].view(2, -1, c.num_kv_heads, c.head_dim)
            pool[0].index_copy_(0, plan.slots, k)
            pool[1].index_copy_(0, plan.slots, v)
            attn = self._attention(layer, q, k, v, plan)
            x.add_(self._o[layer](attn))
            h = _rms_norm(x, post_norm, c.rms_norm_eps)
            gate, up = self._gate_up[layer](h).chunk(2, dim=-1)
            x.add_(self._down[layer](F.silu(gate) * up))
        if plan.logit_rows.numel() == 0:
            return [torch.empty(0, self.config.vocab_size) for _ in chunks]
        h = _rms_norm(x.index_select(0, plan.logit_rows), self._final_norm,
                      self.config.rms_norm_eps)
        logits = self._lm_head(h).float().cpu()
        return list(torch.split(logits, plan.num_logits))

    def _attention(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: _StepPlan
    ) -> torch.Tensor:
        """Attention of every query row over its sequence's cached KV; returns `[T, heads*d]`.

        `k`, `v` are this step's new keys/values (already written to the pool): a chunk that
        starts at position 0 attends to them directly; any other chunk reads its blocks.
        """
        c = self.config
        kvh, d, group = c.num_kv_heads, c.head_dim, c.num_heads // c.num_kv_heads
        out = torch.empty(plan.total, c.num_heads, d, dtype=q.dtype, device=q.device)
        pool = self.kv_pool[layer]
        for sb in plan.short:
            out.index_copy_(0, sb.out_rows, self._short_attention(pool, q, sb))
        for row0, n, blocks, length, mask in plan.long_chunks:
            if blocks is None:
                kc, vc = k[row0:row0 + n], v[row0:row0 + n]
            else:
                kv = pool.index_select(1, blocks).view(2, -1, kvh, d)
                kc, vc = kv[0, :length], kv[1, :length]
            qc = q[row0:row0 + n].transpose(0, 1).unsqueeze(0)  # [1, h, n, d]
            o = F.scaled_dot_product_attention(
                qc, kc.transpose(0, 1).unsqueeze(0), vc.transpose(0, 1).unsqueeze(0),
                attn_mask=mask, is_causal=mask is None, scale=self._scale,
                enable_gqa=group > 1)
            out[row0:row0 + n] = o.squeeze(0).transpose(0, 1)
        return out.view(plan.total, -1)


    def _short_attention(self, pool: torch.Tensor, q: torch.Tensor, sb: _ShortBatch
                         ) -> torch.Tensor:
        """One padded SDPA for a length group of short chunks (decodes, speculative verification).

        Each chunk's KV is gathered by whole blocks and masked per query position. The query
        heads sharing a KV head ride along the query axis (`[B, kv_heads, n * group, d]`), so
        grouped-query attention needs no K/V expansion. Returns the valid rows `[R, heads, d]`.
        """
        c = self.config
        kvh, d, group = c.num_kv_heads, c.head_dim, c.num_heads // c.num_kv_heads
        b, width = sb.batch, sb.width
        kv = pool.index_select(1, sb.blocks).view(2, b, -1, kvh, d)
        qs = q.index_select(0, sb.q_rows).view(b, width, kvh, group, d)
        qs = qs.permute(0, 2, 1, 3, 4).reshape(b, kvh, width * group, d)
        o = F.scaled_dot_product_attention(
            qs, kv[0].transpose(1, 2), kv[1].transpose(1, 2), attn_mask=sb.mask, scale=self._scale)
        o = o.view(b, kvh, width, group, d).permute(0, 2, 1, 3, 4).reshape(b * width, -1, d)
        return o if sb.valid is None else o.index_select(0, sb.valid)


class _ShortBatch:
    """Index tensors of the padded short-chunk attention (see `PagedRunner._short_attention`)."""

    def __init__(
        self,
        short: list[tuple[int, int, int, list[int]]],
        block_size: int,
        group: int,
        device: torch.device,
    ) -> None:
        """Build from (first row, length, start position, block table) per short chunk."""
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


class _Scratch:
    """The runner's per-step buffers: allocated once, reused by every step, zeroed by `clear`.

    `index` rows are the step's token ids, positions, KV slots and logit rows; `hidden` is the
    residual stream `[rows, hidden]`. They grow (doubling; the old buffer zeroed before it is
    dropped) to the largest step seen and are never shrunk.
    """

    def __init__(self, hidden: int, dtype: torch.dtype, device: torch.device) -> None:
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


class _StepPlan:
    """Index tensors for one step, built once and shared by every layer."""

    def __init__(  # noqa: PLR0913, PLR0917 - the pool geometry, passed positionally inside
        self,
        chunks: Sequence[ForwardChunk],
        block_size: int,
        num_blocks: int,
        max_len: int,
        group: int,
        scratch: _Scratch,
    ) -> None:
        device = scratch.device
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
                short.append((row0, n, start, table))
                continue
            if start == 0:  # attends only to its own new K/V: causal, nothing to gather
                self.long_chunks.append((row0, n, None, end, None))
                continue
            # queries sit at the bottom-right of the key range
            kpos = torch.arange(end, device=device)
            mask = kpos[None, :] <= torch.arange(start, end, device=device)[:, None]
            blocks = torch.tensor(table, dtype=torch.long, device=device)
            self.long_chunks.append((row0, n, blocks, end, mask))
        self.total = len(tokens)
        self.tokens, self.positions, self.slots, self.logit_rows = scratch.load(
            tokens, positions, slots, logit_rows)
        self.short = [_ShortBatch(g, block_size, group, device)
                      for g in _group_by_length(short, block_size)]


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
