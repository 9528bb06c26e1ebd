"""The model runner: a Llama-family forward pass over one pre-allocated, zeroed, paged KV pool.

This module and `linear.py` (its matrix products) are the only parts of the engine that touch a
device. It implements the `ModelRunner` protocol of `batch.py`: one `forward` per engine step
computes every chunk of the step together.

How a step runs (varlen batching): the tokens of all chunks are flattened into one `[T, hidden]`
activation, so each linear map is a single GEMM for the whole step (on CPU through oneDNN with
weights prepacked once, see `linear.py`); K/V of the new tokens are written into the pool with
one `index_copy_` per layer; attention then runs by one of the backends of `attention.py`:
`flex` (CUDA: ONE FlexAttention call per layer over every chunk, reading K/V in place from the
pool through the block tables), `padded` (one padded SDPA per layer, blocks gathered) or
`grouped` (CPU: decodes and draft verification batched per length group, long chunks one SDPA
each). `forward_plan.py` lays the step out. Logits are computed only for the positions the
chunks ask for.

On CUDA, decode steps replay CUDA graphs captured at start-up (`graphs.py`); bf16 is the
default dtype there (fp32 elsewhere).

Invariants:
* The pool is ONE tensor `[layers, 2, blocks, block_size, kv_heads, head_dim]` allocated with
  `torch.zeros`. With decode graphs it has one block past `num_blocks`, the trash block that
  only graph padding rows write, and `kv_pool` is its view without it; without graphs
  `kv_pool` is the pool itself (contiguous: the CPU gathers read it fastest that way). It is
  never reallocated, copied to the host, or written anywhere else.
* `zero_blocks` zeroes whole blocks, in every layer, K and V, in one `index_fill_`.
* Nothing about a request survives a `forward` call except what it wrote into its own blocks,
  the last step's per-step buffers (`forward_plan.Scratch`: index rows, residual stream and the
  attention's K/V gathers, allocated once and reused, holding that step's data only; the
  decode graphs' static buffers and memory pool; the trash block) and, on CUDA, the memory
  the caching allocator holds free: `clear_scratch` zeroes all of them when the engine goes
  idle. On CPU every other tensor of a step is a temporary freed at its end; under the node's
  memory hygiene (`node/hygiene.py`) freed memory is overwritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from hushcc.errors import ConfigError
from node.engine.attention import flex_attention, padded_attention, resolve_backend
from node.engine.device_memory import scrub_free_memory
from node.engine.forward_plan import ForwardPlan, Scratch
from node.engine.graphs import DecodeGraphs, StepRows
from node.engine.linear import PackedLinear, make_linears

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.batch import ForwardChunk
    from node.engine.graphs import Attend
    from node.engine.model import LlamaWeights


class PagedRunner:
    """Runs a Llama-family model over a paged KV pool (implements `batch.ModelRunner`)."""

    def __init__(  # noqa: PLR0913 - sizes of the pool are all independent knobs
        self,
        weights: LlamaWeights,
        *,
        num_blocks: int,
        block_size: int = 16,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        max_model_len: int | None = None,
        prepack: bool | None = None,
        attention: str | None = None,
        cuda_graphs: bool | None = None,
        max_graph_batch: int = 256,
    ) -> None:
        """Move the weights to `device` and allocate the zeroed KV pool.

        Args:
            weights: the model.
            num_blocks: blocks in the pool.
            block_size: tokens per block.
            device: torch device ("cpu", "cuda", ...).
            dtype: compute and KV dtype (default: bfloat16 on CUDA, float32 elsewhere).
            max_model_len: longest sequence served (default: the config's maximum).
            prepack: use oneDNN prepacked linears (default: on CPU when they work; see
                `linear.py`).
            attention: attention backend, "flex", "padded" or "grouped" (default: the
                device's, see `attention.resolve_backend`).
            cuda_graphs: replay decode steps from graphs captured here, for batches up to
                `max_graph_batch` (default: on CUDA; on another device the same static path
                runs without capture, for tests; see `graphs.py`).
            max_graph_batch: largest decode batch replayed from a graph.

        Raises:
            ConfigError: on non-positive sizes, a device that is not here (`resolve_device`),
                an unknown backend, or `prepack=True` where it cannot work.
        """
        if num_blocks <= 0 or block_size <= 0:
            raise ConfigError("num_blocks and block_size must be positive")
        c = weights.config
        self.config = c
        self.device = resolve_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
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
        graphs = cuda_graphs if cuda_graphs is not None else self.device.type == "cuda"
        # with decode graphs, one more block than the manager hands out: the trash block of
        # graph padding rows; without, none, so `kv_pool` is the whole (contiguous) pool
        self._trash = int(graphs)
        self._pool = torch.zeros(
            (c.num_layers, 2, num_blocks + self._trash, block_size, c.num_kv_heads, c.head_dim),
            dtype=dtype, device=self.device)
        self.kv_pool = self._pool[:, :, :num_blocks] if graphs else self._pool
        pos = torch.arange(self.max_model_len, dtype=torch.float32)
        freqs = torch.outer(pos, c.inv_freq())
        scale = c.rope_attention_scaling()
        self._cos = (freqs.cos() * scale).to(self.device, dtype)
        self._sin = (freqs.sin() * scale).to(self.device, dtype)
        self._q = c.num_heads * c.head_dim
        self._kv = c.num_kv_heads * c.head_dim
        self._scale = c.head_dim ** -0.5
        self._scratch = Scratch(c.hidden_size, dtype, self.device)
        self.attention = resolve_backend(attention, self.device, block_size)
        self._graphs: DecodeGraphs | None = None
        self.scrubbed_bytes = 0  # device bytes the last `clear_scratch` zeroed (CUDA only)
        if graphs:
            with torch.inference_mode():
                self._graphs = DecodeGraphs(self, max_graph_batch, self.max_model_len,
                                            capture=self.device.type == "cuda")
            self.clear_scratch()

    @property
    def block_size(self) -> int:
        """Tokens per KV block."""
        return self._block_size

    @property
    def num_blocks(self) -> int:
        """Blocks in the pool."""
        return self._num_blocks

    @property
    def graphs(self) -> DecodeGraphs | None:
        """The decode graphs (None when decode steps run eagerly)."""
        return self._graphs

    def hidden_size(self) -> int:
        """Width of the residual stream."""
        return self.config.hidden_size

    def layer_pool(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s pool `[2, blocks, bs, kv_heads, d]`, the trash block included."""
        return self._pool[layer]

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        """Zero the given blocks in every layer, K and V, in one batched operation."""
        if not block_ids:
            return
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        self.kv_pool.index_fill_(2, idx, 0)

    @torch.inference_mode()  # the buffers are inference tensors (created inside `forward`)
    def clear_scratch(self) -> None:
        """Zero the per-step buffers (token ids, positions, activations of the last step).

        The engine calls this when it goes idle, so nothing of the last request stays in them:
        the scratch buffers, the decode graphs' buffers (`DecodeGraphs.scrub`), the trash
        block and, on CUDA, the memory the caching allocator holds free
        (`device_memory.scrub_free_memory`).
        """
        self._scratch.clear()
        if self._graphs is not None:
            self._graphs.scrub()
        if self._trash:
            self._pool[:, :, self._num_blocks].zero_()
        self.scrubbed_bytes = scrub_free_memory(self.device)  # CUDA: the allocator's free memory

    @torch.inference_mode()
    def scratch_is_zero(self) -> bool:
        """True when the per-step buffers hold only zeros."""
        return self._scratch.is_zero()

    def kv_pool_is_zero(self, block_ids: Sequence[int] | None = None) -> bool:
        """True when the given blocks (default: the whole pool) hold only zeros."""
        if block_ids is None:  # the trash block included
            return not bool(self._pool.any())
        if not block_ids:
            return True
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        return not bool(self.kv_pool.index_select(2, idx).any())

    @torch.inference_mode()
    def forward(self, chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        """Compute one step; return, per chunk, fp32 logits `[num_logits, vocab]` on the device.

        Args:
            chunks: the step's chunks (each sequence at most once).

        Returns:
            Logits for the trailing `num_logits` positions of each chunk.

        Raises:
            ProtocolError: when a chunk is empty, too long, or its block table is too short
                (from `ForwardPlan`).
        """
        if not chunks:
            return []
        graph = None if self._graphs is None else self._graphs.pick(chunks, self._block_size)
        plan = ForwardPlan(chunks, block_size=self._block_size, num_blocks=self._num_blocks,
                           max_len=self.max_model_len, scratch=self._scratch,
                           group=self.config.num_heads // self.config.num_kv_heads,
                           backend="none" if graph is not None else self.attention)
        try:
            if graph is not None:  # a copy: the graph's static logits are overwritten next replay
                logits = graph.run(plan.tokens, plan.positions, plan.slots, plan.spans).to(
                    torch.float32, copy=True)
            else:
                def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                           ) -> torch.Tensor:
                    return self._attention(layer, q, k, v, plan)

                step = StepRows(plan.tokens, plan.positions, plan.slots, plan.logit_rows)
                logits = self.compute(self._scratch.hidden_rows(plan.total), step, attend)
        finally:
            self._scratch.end_step()  # the scratch now holds this step's data only
        # the logits stay on the device: the engine samples them there
        return list(torch.split(logits.float(), plan.num_logits))

    def compute(self, x: torch.Tensor, step: StepRows, attend: Attend) -> torch.Tensor:
        """The model over the rows of one step; returns logits of `step.logit_rows`.

        `x` is the residual-stream buffer `[rows, hidden]` (overwritten); K/V of every row are
        written into the pool at `step.slots` before `attend(layer, q, k, v)` reads them.
        """
        c = self.config
        rows = x.shape[0]
        torch.index_select(self._embed, 0, step.tokens, out=x)
        cos, sin = self._cos[step.positions], self._sin[step.positions]
        heads = c.num_heads + c.num_kv_heads
        for layer, (input_norm, post_norm) in enumerate(self._norms):
            h = _rms_norm(x, input_norm, c.rms_norm_eps)
            qkv = self._qkv[layer](h)
            qk = _rope_(qkv[:, :self._q + self._kv].view(rows, heads, c.head_dim), cos, sin)
            q, k = qk[:, :c.num_heads], qk[:, c.num_heads:]
            v = qkv[:, self._q + self._kv:].view(rows, c.num_kv_heads, c.head_dim)
            pool = self._pool[layer].view(2, -1, c.num_kv_heads, c.head_dim)
            pool[0].index_copy_(0, step.slots, k)
            pool[1].index_copy_(0, step.slots, v)
            x.add_(self._o[layer](attend(layer, q, k, v)))
            h = _rms_norm(x, post_norm, c.rms_norm_eps)
            gate, up = self._gate_up[layer](h).chunk(2, dim=-1)
            x.add_(self._down[layer](F.silu(gate, inplace=True).mul_(up)))
        if step.logit_rows is not None and step.logit_rows.numel() == 0:
            return torch.empty(0, c.vocab_size, dtype=x.dtype, device=x.device)
        h = x if step.logit_rows is None else x.index_select(0, step.logit_rows)
        return self._lm_head(_rms_norm(h, self._final_norm, c.rms_norm_eps))

    def _attention(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: ForwardPlan
    ) -> torch.Tensor:
        """Attention of every query row over its sequence's cached KV; returns `[T, heads*d]`.

        `k`, `v` are this step's new keys/values (already written to the pool). `flex` and
        `padded` make one call for the whole step; `grouped` one per length group of short
        chunks and one per long chunk (a chunk starting at position 0 attends to its fresh K/V
        directly, any other reads its blocks).
        """
        pool = self.kv_pool[layer]
        if plan.flex is not None:
            return flex_attention(q, pool, plan.flex, self._scale)
        c = self.config
        kvh, d, group = c.num_kv_heads, c.head_dim, c.num_heads // c.num_kv_heads
        gather = self._scratch.gather
        if len(plan.batches) == 1 and not plan.long_chunks and plan.batches[0].in_order:
            return padded_attention(q, pool, plan.batches[0], self._scale, gather
                                    ).view(plan.total, -1)
        out = torch.empty(plan.total, c.num_heads, d, dtype=q.dtype, device=q.device)
        for pb in plan.batches:
            out.index_copy_(0, pb.out_rows, padded_attention(q, pool, pb, self._scale, gather))
        for lc in plan.long_chunks:
            rows = slice(lc.row0, lc.row0 + lc.length)
            if lc.blocks is None:
                kc, vc = k[rows], v[rows]
            else:
                kv = gather(pool, lc.blocks).view(2, -1, kvh, d)
                kc, vc = kv[0, :lc.kv_len], kv[1, :lc.kv_len]
            qc = q[rows].transpose(0, 1).unsqueeze(0)  # [1, h, n, d]
            o = F.scaled_dot_product_attention(
                qc, kc.transpose(0, 1).unsqueeze(0), vc.transpose(0, 1).unsqueeze(0),
                attn_mask=lc.mask, is_causal=lc.mask is None, scale=self._scale,
                enable_gqa=group > 1)
            out[rows] = o.squeeze(0).transpose(0, 1)
        return out.view(plan.total, -1)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: torch.device | str) -> torch.device:
    """The device `device` names, checked to be present: "cpu", "cuda" or "cuda:N".

    Raises:
        ConfigError: another name, or CUDA asked for where torch sees no such CUDA device.
    """
    try:
        dev: torch.device | None = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in {"cpu", "cuda"} or (
            dev.type == "cpu" and dev.index not in {None, 0}):
        raise ConfigError(f"not a device (cpu, cuda or cuda:N): {str(device)[:50]!r}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError("no CUDA device is available here")
        if (dev.index or 0) >= count:
            raise ConfigError(f"no CUDA device {dev.index} (this machine has {count})")
    return dev


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference's RMSNorm, its operations in its order (the in-place ones on temporaries)."""
    if x.dtype != torch.float32:  # normalise in fp32 like the reference, scale in the model dtype
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return (x * torch.rsqrt_(x.pow(2).mean(-1, keepdim=True).add_(eps))).mul_(weight)


def _rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on `[T, heads, d]` with `cos`/`sin` `[T, d/2]`, in place; returns `x`.

    The same products and sums as the reference (`x1*c - x2*s`, `x2*c + x1*s`), so the same
    rounding; in place, a step allocates two half-width temporaries instead of seven.
    """
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    x2s, x1s = x2 * s, x1 * s
    x1.mul_(c).sub_(x2s)
    x2.mul_(c).add_(x1s)
    return x


def tiny_runner(
    *, num_blocks: int = 64, block_size: int = 4, seed: int = 0, attention: str | None = None,
    **config: int | bool,
) -> PagedRunner:
    """A runner over a tiny random Llama model, for tests of the engine (CPU, fp32).

    Args:
        num_blocks: blocks in the pool.
        block_size: tokens per block.
        seed: weight seed.
        attention: attention backend (default: the device's).
        **config: overrides of `model.tiny_hf_config` (vocab_size, num_hidden_layers, ...).

    Returns:
        The runner.
    """
    from node.engine.model import ModelConfig, random_weights, tiny_hf_config  # noqa: PLC0415

    mc = ModelConfig.from_hf(tiny_hf_config(**config))
    return PagedRunner(random_weights(mc, seed), num_blocks=num_blocks, block_size=block_size,
                       attention=attention)
