"""Roofline helpers of bench/engine.py: measured GEMM peak and read bandwidth, workload FLOPs,
the memory-aware bound of a traced schedule, and the runner wrappers that trace it
(`TimedZeroRunner`) or price erasure (`NoZeroRunner`).

Roofline: GEMM GFLOP/s measured here with the same threads through torch.matmul (MKL on CPU,
cuBLAS on CUDA) and oneDNN's prepacked linear, the faster taken as the machine's peak; workload
FLOPs = per computed token 2 x (non-embedding matmul params) + attention (4 x layers x q_dim x
context) and 2 x vocab x hidden per logits row.
Memory-aware bound: the engine's own schedule (steps traced) costed per step as the larger of
its FLOPs at the GEMM peak and its weight + KV bytes at the measured read bandwidth.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from node.engine.linear import PackedLinear

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from node.engine.batch import ForwardChunk
    from node.engine.model import ModelConfig
    from node.engine.runner import PagedRunner

Workload = list[tuple[list[int], int]]


def matmul_gflops(device: str, dtype: torch.dtype, size: int) -> dict[str, float]:
    """Best-of-5 GFLOP/s of a square GEMM through each path this build has on `device`.

    `torch.matmul` (MKL on CPU, cuBLAS on CUDA) and, on CPU, oneDNN's prepacked linear (the
    path the runner uses): the roofline takes the fastest, the machine's real GEMM peak.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    paths: dict[str, Callable[[], object]] = {"torch.matmul": lambda: a @ b}
    if device == "cpu" and PackedLinear.probe(dtype):
        packed = PackedLinear(b.T.contiguous())
        paths["oneDNN linear"] = lambda: packed(a)
    rates: dict[str, float] = {}
    for name, fn in paths.items():
        for _ in range(3):
            fn()
        best = 0.0
        for _ in range(5):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(4):
                fn()
            sync(device)
            best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0) / 1e9)
        rates[name] = best
    return rates


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def workload_flops(cfg: ModelConfig, reqs: Workload) -> float:
    h, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    per_tok = 2 * cfg.num_layers * (h * (q + 2 * kv) + q * h + 3 * h * cfg.intermediate_size)
    head = 2 * cfg.vocab_size * h
    total = 0.0
    for ids, out in reqs:
        n = len(ids) + out - 1  # tokens pushed through the model (the last one is never fed)
        ctx = n * (n + 1) / 2  # sum of context lengths
        total += n * per_tok + 4 * cfg.num_layers * q * ctx + out * head
    return total


def read_gbps(device: str) -> float:
    """Best-of-5 memory read bandwidth (GB/s): a sum over a tensor far larger than the caches."""
    big = torch.ones(64 * 1024 * 1024, device=device)  # 256 MiB of fp32
    best = 0.0
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        big.sum()
        sync(device)
        best = max(best, big.numel() * 4 / (time.perf_counter() - t0) / 1e9)
    return best


def step_bound(
    cfg: ModelConfig, steps: Sequence[tuple[int, int, int, int]], peak_gflops: float, gbps: float,
    elem_bytes: int,
) -> tuple[float, float, float]:
    """Seconds the traced schedule needs at best: sum over steps of max(compute, memory).

    Compute: the step's matmul and attention FLOPs at the GEMM peak. Memory: every layer's
    weights (and the LM head when a step asks for logits) plus the KV positions the step's
    chunks attend over, each read once at `gbps`. Returns (bound, compute part, memory part).
    """
    h, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer_params = h * (q + 2 * kv) + q * h + 3 * h * cfg.intermediate_size
    bound = compute = memory = 0.0
    for rows, logit_rows, kv_read, attended in steps:
        flops = 2 * cfg.num_layers * (rows * layer_params + 2 * q * attended)
        flops += 2 * logit_rows * cfg.vocab_size * h
        nbytes = elem_bytes * (cfg.num_layers * (layer_params + 2 * kv * kv_read)
                               + (cfg.vocab_size * h if logit_rows else 0))
        c, m = flops / peak_gflops / 1e9, nbytes / gbps / 1e9
        bound, compute, memory = bound + max(c, m), compute + c, memory + m
    return bound, compute, memory


class NoZeroRunner:
    """The runner with erasure disabled (bench only: prices zeroing, never used in the node)."""

    def __init__(self, runner: PagedRunner) -> None:
        self.r = runner
        self.block_size, self.num_blocks = runner.block_size, runner.num_blocks
        self.forward, self.kv_pool_is_zero = runner.forward, runner.kv_pool_is_zero
        self.clear_scratch = runner.clear_scratch

    def zero_blocks(self, block_ids: object) -> None:
        pass


class TimedZeroRunner:
    """The runner with the time in `zero_blocks` (the erasure itself) and each step's shape kept.

    `steps` holds, per `forward`: (rows computed, logits rows, KV positions read, query-key
    pairs attended), for the memory-aware bound of `step_bound`.
    """

    def __init__(self, runner: PagedRunner) -> None:
        self.r = runner
        self.block_size, self.num_blocks = runner.block_size, runner.num_blocks
        self.kv_pool_is_zero = runner.kv_pool_is_zero
        self.clear_scratch = runner.clear_scratch
        self.zero_s = 0.0
        self.zeroed = 0
        self.steps: list[tuple[int, int, int, int]] = []

    def forward(self, chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        self.steps.append((sum(len(c.token_ids) for c in chunks),
                           sum(c.num_logits for c in chunks),
                           sum(c.start_pos + len(c.token_ids) for c in chunks),
                           sum(len(c.token_ids) * (2 * c.start_pos + len(c.token_ids) + 1) // 2
                               for c in chunks)))
        return self.r.forward(chunks)

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        t0 = time.perf_counter()
        self.r.zero_blocks(block_ids)
        self.zero_s += time.perf_counter() - t0
        self.zeroed += len(block_ids)
