#!/usr/bin/env python
"""The engine with each attention backend, on one workload, side by side (old path vs new).

Same workload and engine settings as bench/engine.py (N requests, prompts 16-512, outputs
8-128, greedy, EOS off, blocks zeroed on free). Backends (node/engine/attention.py):
  grouped  decodes batched per length group + one SDPA per long chunk (the previous engine)
  padded   one padded SDPA per layer per step over every chunk
  flex     one FlexAttention call per layer per step, K/V read in place (CUDA; eager on CPU
           materialises scores over the whole pool, so it is only run there with --flex-cpu)
Runs are interleaved (A B C A B C ...) and medians compared, so drift falls on all alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import build_workload, run_engine
from bench.roofline import sync
from node.engine.model import (
    LlamaWeights,
    ModelConfig,
    load_smollm2,
    random_weights,
    tiny_hf_config,
)
from node.engine.runner import PagedRunner
from node.engine.tokenizer import load_smollm2_tokenizer


def weights_for(name: str) -> LlamaWeights:
    if name == "smollm2":
        return load_smollm2()
    hf = tiny_hf_config(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=4, vocab_size=32000,
                        max_position_embeddings=2048)
    return random_weights(ModelConfig.from_hf(hf), seed=0)


def bench(name: str, args: argparse.Namespace) -> None:
    dtype = getattr(torch, args.dtype)
    weights = weights_for(name)
    reqs = build_workload(args.n, weights.config.vocab_size, args.seed)
    blocks = sum(-(-(len(i) + o) // args.block_size) for i, o in reqs) + 8
    backends = ["grouped", "padded"]
    if args.device.startswith("cuda") or args.flex_cpu:
        backends.append("flex")
    runners = {b: PagedRunner(weights, num_blocks=blocks, block_size=args.block_size,
                              device=args.device, dtype=dtype, max_model_len=2048, attention=b)
               for b in backends}
    tok = load_smollm2_tokenizer()
    print(f"\n=== {name}  device {args.device}  dtype {args.dtype}  threads "
          f"{torch.get_num_threads()}  load {os.getloadavg()[0]:.2f} ===", flush=True)
    warm = [(ids[:32], 4) for ids, _ in reqs[:4]]
    for r in runners.values():
        run_engine(r, tok, warm, args)
        run_engine(r, tok, reqs, args)  # untimed: allocator and caches warm
    times: dict[str, list[float]] = {b: [] for b in backends}
    toks = 0
    for _ in range(args.runs):
        for b, r in runners.items():
            sync(args.device)
            toks, dt = run_engine(r, tok, reqs, args)
            times[b].append(dt)
            print(f"  {b}: {toks} tok in {dt:.2f}s", flush=True)
    base = toks / statistics.median(times["grouped"])
    print("\n| backend | runs (s) | tok/s | x grouped |\n|---|---|---:|---:|")
    for b in backends:
        rate = toks / statistics.median(times[b])
        runs = " ".join(f"{t:.2f}" for t in times[b])
        print(f"| {b} | {runs} | {rate:.1f} | {rate / base:.2f} |")
    print(f"load average now: {os.getloadavg()[0]:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,tiny")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--flex-cpu", action="store_true", help="also run eager flex on CPU (slow)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    for name in args.models.split(","):
        bench(name, args)
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
