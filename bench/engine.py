#!/usr/bin/env python
"""Engine throughput against Hugging Face's own generation modes, in one run, side by side.

Workload (exactly as ../shared/bench/hf_baseline.py): N=32 requests, prompt lengths uniform in
[16, 512], output lengths uniform in [8, 128], seed 1234, random token ids, EOS off, greedy.
Metric: useful generated tokens / wall-clock seconds, prefill included.

Rows
  hf:seq / hf:static32 / hf:cb   the Hugging Face peers (functions of hf_baseline.py, same model
                                 object, same weights); skipped with a message if the file is absent
  hushcc engine                  node.engine.Engine over PagedRunner (blocks zeroed on free)
  hushcc engine, zeroing off     the same with zero_blocks a no-op (to price erasure only)
  hushcc engine, overlap on|off  overlap (forward n+1 during step n's text) the other way from
                                 the device's default (on for CUDA, off for CPU)
  hushcc engine + prompt lookup  speculative decoding (random prompts: no repeats to find)
  repetitive: plain / lookup     a workload whose prompts repeat n-grams (where lookup can help)
  previous: ...                  (unless --no-previous) the engine as before issue 16's sampler
                                 work, in the same run: every sequence sampled alone (its own
                                 argmax, one host transfer per sequence) and prompt lookup never
                                 turned off; "x best HF" of old and new side by side

Models: smollm2, tiny (default); large = TinyLlama-1.1B shape and llama8b = Llama-3.1-8B shape
(random weights, transformers' own init), built only when asked, llama8b never on CPU unless
--cpu-large (32 GB of fp32 weights).
Roofline and memory-aware bound: see bench/roofline.py; fraction = achieved FLOP/s / measured
GEMM FLOP/s; the bound says how much of the gap is the workload's memory-bound decode tail.
Erasure: zeroing on/off runs interleaved A B B A ... (--erasure-pairs), medians compared.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType

    from node.engine.detokenize import Decoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.roofline import (
    NoZeroRunner,
    TimedZeroRunner,
    matmul_gflops,
    read_gbps,
    step_bound,
    sync,
    workload_flops,
)
from node.engine.engine import Engine, EngineConfig, GenerateRequest
from node.engine.model import LlamaWeights, ModelConfig, random_weights
from node.engine.runner import PagedRunner
from node.engine.sampling import SamplingParams
from node.engine.sequence import EngineLimits
from node.engine.speculative import PromptLookupConfig

HF_BASELINE = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "hf_baseline.py"
SALT = b"bench-tenant-salt-0123456789abcdef"
LARGE_MODELS: dict[str, dict[str, Any]] = {  # random weights, built only when asked
    "large": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
              "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
              "max_position_embeddings": 2048},  # TinyLlama-1.1B shape
    "llama8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                "max_position_embeddings": 131072, "rope_theta": 500000.0,
                "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192}},  # Llama-3.1-8B
}


Workload = list[tuple[list[int], int]]


def load_hf_baseline() -> ModuleType | None:
    if not HF_BASELINE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("hf_baseline", HF_BASELINE)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_workload(n: int, vocab: int, seed: int) -> Workload:
    """Same RNG use as hf_baseline.build_workload (used when that file is absent)."""
    len_rng, tok_rng = random.Random(seed), random.Random(seed + 1)
    lens = [(len_rng.randint(16, 512), len_rng.randint(8, 128)) for _ in range(n)]
    return [([tok_rng.randrange(3, vocab) for _ in range(p)], o) for p, o in lens]


def repetitive_workload(n: int, vocab: int, seed: int) -> Workload:
    """Prompts built from a few repeated random phrases, outputs as in the main workload."""
    rng = random.Random(seed + 7)
    reqs = []
    for _ in range(n):
        phrases = [[rng.randrange(3, vocab) for _ in range(rng.randint(4, 12))] for _ in range(4)]
        ids: list[int] = []
        target = rng.randint(16, 512)
        while len(ids) < target:
            ids += rng.choice(phrases)
        reqs.append((ids[:target], rng.randint(8, 128)))
    return reqs


async def drive(engine: Engine, reqs: Workload) -> int:
    async def one(ids: list[int], out: int) -> int:
        req = GenerateRequest(tuple(ids), SamplingParams(max_tokens=out, ignore_eos=True))
        got = 0
        async for d in engine.submit(req, SALT):
            got = d.completion_tokens
        if got != out:
            raise RuntimeError("a request produced the wrong number of tokens")
        return got

    toks = sum(await asyncio.gather(*(one(i, o) for i, o in reqs)))
    await engine.close()
    return toks


def one_by_one(outs: Sequence[torch.Tensor | None], wants: Sequence[object]
               ) -> list[list[int] | None]:
    """The previous sampling: no batched call; the engine decides each sequence alone."""
    del wants
    return [None] * len(outs)


class PreviousEngine(Engine):
    """The engine as before issue 16's sampler work: every sequence sampled alone (per-row
    reference, one host transfer per sequence); run with `PREVIOUS_LOOKUP` (never turned off)."""

    pick_step = staticmethod(one_by_one)


class FlippedOverlap(Engine):
    """The engine with overlap (docs/engine.md) the other way from its device's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - Engine's own
        super().__init__(*args, **kwargs)
        self.overlap = not self.overlap


LOOKUP = PromptLookupConfig(num_draft=4, max_ngram=3)
PREVIOUS = "previous engine"
PREVIOUS_LOOKUP = PromptLookupConfig(num_draft=4, max_ngram=3, min_acceptance=0.0)


def run_engine(  # noqa: PLR0917 - bench plumbing
    runner: PagedRunner | NoZeroRunner | TimedZeroRunner, tokenizer: Decoder, reqs: Workload,
    args: argparse.Namespace,
    spec: PromptLookupConfig | None = None,
    engine_cls: type[Engine] = Engine,
) -> tuple[int, float]:
    limits = EngineLimits(max_model_len=2048, max_tokens_cap=1024, max_num_seqs=len(reqs),
                          max_num_batched_tokens=args.budget, max_draft_tokens=4)
    cfg = EngineConfig(limits=limits, speculative=spec)
    engine = engine_cls(runner, tokenizer, cfg)
    t0 = time.perf_counter()
    toks = asyncio.run(drive(engine, reqs))
    sync(args.device)
    dt = time.perf_counter() - t0
    if isinstance(runner, NoZeroRunner):  # restore the invariant the next run relies on
        runner.r.zero_blocks(range(runner.num_blocks))
    elif not runner.kv_pool_is_zero():
        raise RuntimeError("KV pool not zero after the engine went idle")
    return toks, dt


def timed_runs(fn: Callable[[], tuple[int, float]], runs: int) -> tuple[int, float]:
    res = [fn() for _ in range(runs)]
    toks = res[0][0]
    return toks, statistics.median(dt for _, dt in res)


def bench_model(name: str, args: argparse.Namespace, hf: ModuleType | None) -> None:  # noqa: C901, PLR0912, PLR0915
    dtype = getattr(torch, args.dtype)
    if name == "llama8b" and args.device == "cpu" and not args.cpu_large:
        print(f"\n=== model {name}: not built on CPU (32 GB of fp32 weights; --cpu-large) ===")
        return
    print(f"\n=== model {name}  device {args.device}  dtype {args.dtype}  "
          f"threads {torch.get_num_threads()} ===", flush=True)
    t0 = time.perf_counter()
    hf_model = None
    if name in LARGE_MODELS:  # random weights in transformers' own init, shared by both sides
        shape = LARGE_MODELS[name]
        hf_model = _large_model(shape, args.device, dtype) if hf is not None else None
        if hf_model is None:
            weights = random_weights(ModelConfig.from_hf(_llama_config(shape)), 0, std=0.02)
        else:
            weights = LlamaWeights.from_state_dict(ModelConfig.from_hf(hf_model.config),
                                                   hf_model.state_dict())
        mc = weights.config
    elif hf is not None:
        hf_model = hf.build_model(name, args.device, dtype)
        mc = ModelConfig.from_hf(hf_model.config)
        weights = LlamaWeights.from_state_dict(mc, hf_model.state_dict())
    else:
        from node.engine.model import load_smollm2, tiny_hf_config  # noqa: PLC0415

        if name == "smollm2":
            weights = load_smollm2()
        else:
            hf_tiny = tiny_hf_config(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=4,
                                     vocab_size=32000, max_position_embeddings=2048)
            weights = random_weights(ModelConfig.from_hf(hf_tiny), seed=0)
        mc = weights.config
    print(f"load {time.perf_counter() - t0:.1f}s  params {mc.num_params() / 1e6:.1f}M", flush=True)
    reqs = (hf.build_workload if hf else build_workload)(args.n, mc.vocab_size, args.seed)
    flops = workload_flops(mc, reqs)
    gemm_size = 2048 if args.device == "cpu" else 8192
    gemm = matmul_gflops(args.device, dtype, gemm_size)
    peak = max(gemm.values())
    print(f"workload: {len(reqs)} requests, {sum(len(i) for i, _ in reqs)} prompt tokens, "
          f"{sum(o for _, o in reqs)} output tokens, {flops / 1e12:.2f} TFLOP; measured GEMM "
          + ", ".join(f"{k} {v:.0f}" for k, v in gemm.items()) + " GFLOP/s", flush=True)

    from node.engine.tokenizer import load_smollm2_tokenizer  # noqa: PLC0415

    tokenizer = load_smollm2_tokenizer()
    warm = [(ids[:32], 4) for ids, _ in reqs[:4]]
    rows: list[tuple[str, int, float, float | None]] = []

    def add(label: str, toks: int, dt: float, fl: float | None = None) -> None:
        rows.append((label, toks, dt, fl))
        print(f"  {label}: {toks} tok in {dt:.2f}s = {toks / dt:.1f} tok/s", flush=True)

    if hf_model is not None and hf is not None and args.hf_modes:
        fns = {"seq": lambda r: hf.run_seq(hf_model, r, args.device),
               "static32": lambda r: hf.run_static(hf_model, r, args.device, 32),
               "static8": lambda r: hf.run_static(hf_model, r, args.device, 8),
               "cb": lambda r: hf.run_cb(hf_model, r, _cb_args())}
        for mode in args.hf_modes.split(","):
            try:
                fns[mode](warm)

                def once(mode: str = mode) -> tuple[int, float]:
                    t = time.perf_counter()
                    out = fns[mode](reqs)
                    return out if isinstance(out, tuple) else (out, time.perf_counter() - t)

                add(f"hf:{mode}", *timed_runs(once, args.runs))
            except Exception as exc:  # noqa: BLE001 - report the failure and go on
                print(f"  hf:{mode} failed: {exc!r}")
    elif hf is None:
        print("  (../shared/bench/hf_baseline.py absent: Hugging Face rows skipped)")
    hf_model = None  # free it before our pool is allocated

    blocks = sum(-(-(len(i) + o) // args.block_size) for i, o in reqs) + 8
    runner = PagedRunner(weights, num_blocks=blocks, block_size=args.block_size,
                         device=args.device, dtype=dtype, max_model_len=2048)
    del weights
    timed = TimedZeroRunner(runner)
    variants: list[tuple[str, PagedRunner | NoZeroRunner | TimedZeroRunner,
                         PromptLookupConfig | None, Workload, type[Engine]]]
    variants = [("hushcc engine", timed, None, reqs, Engine),
                ("hushcc engine, zeroing off", NoZeroRunner(runner), None, reqs, Engine)]
    flipped = "on" if args.device == "cpu" else "off"  # the default is on for CUDA only
    variants.append((f"hushcc engine, overlap {flipped}", runner, None, reqs, FlippedOverlap))
    if args.previous:
        variants.append((PREVIOUS, runner, None, reqs, PreviousEngine))
    if args.spec:
        rep = repetitive_workload(args.n, mc.vocab_size, args.seed)
        variants += [("hushcc engine + prompt lookup", runner, LOOKUP, reqs, Engine),
                     ("repetitive prompts: engine", runner, None, rep, Engine),
                     ("repetitive prompts: + prompt lookup", runner, LOOKUP, rep, Engine)]
        if args.previous:
            variants += [(PREVIOUS + " + lookup", runner, PREVIOUS_LOOKUP, reqs, PreviousEngine),
                         ("repetitive: " + PREVIOUS + " + lookup", runner, PREVIOUS_LOOKUP, rep,
                          PreviousEngine)]
    run_engine(runner, tokenizer, warm, args)
    run_engine(runner, tokenizer, reqs, args)  # one untimed full run: allocator and caches warm
    # zeroing on/off interleaved A B B A ..., so drift and order effects fall on both alike
    pairs = ((0, 1), (1, 0))
    order = [i for k in range(max(args.erasure_pairs, args.runs)) for i in pairs[k % 2]]
    times: dict[int, list[float]] = {0: [], 1: []}
    toks_main = 0
    for i in order:
        if i == 0:
            timed.steps.clear()  # keep the schedule of the last zeroing-on run
        toks_main, dt = run_engine(variants[i][1], tokenizer, reqs, args)
        times[i].append(dt)
    print("  zeroing on / off, each run (s): "
          + " / ".join(" ".join(f"{t:.2f}" for t in times[i]) for i in (0, 1)))
    add(variants[0][0], toks_main, statistics.median(times[0]), flops)
    add(variants[1][0], toks_main, statistics.median(times[1]), flops)
    for label, r, spec, wl, cls in variants[2:]:
        add(label, *timed_runs(lambda: run_engine(r, tokenizer, wl, args, spec, cls),  # noqa: B023 - run at once
                               args.runs))
    peak_after = max(matmul_gflops(args.device, dtype, gemm_size).values())
    print(f"best GEMM GFLOP/s measured before / after the engine runs: {peak:.0f} / "
          f"{peak_after:.0f}; the roofline uses the higher")
    n_on = order.count(0)
    print(f"erasure: {timed.zeroed // n_on} blocks zeroed per run, {timed.zero_s / n_on:.3f} s "
          f"in zero_blocks = {100 * timed.zero_s / sum(times[0]):.2f} % of the run time")
    gbps = read_gbps(args.device)
    bound, comp, mem = step_bound(mc, timed.steps, max(peak, peak_after), gbps,
                                  torch.finfo(dtype).bits // 8)
    print(f"memory-aware bound of this schedule ({len(timed.steps)} steps, each max(compute at "
          f"the GEMM peak, weights + KV read at {gbps:.0f} GB/s)): {bound:.2f} s (compute "
          f"{comp:.2f} s, memory {mem:.2f} s); the engine ran at {bound / times[0][-1]:.0%} of it")
    print_table(rows, max(peak, peak_after))


def _cb_args() -> argparse.Namespace:
    return argparse.Namespace(cb_num_blocks=128, cb_max_batch_tokens=1024, cb_page_size=256,
                              cb_max_requests=32)


def _large_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> Any:  # noqa: ANN401 - HF model
    import transformers  # noqa: PLC0415

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_llama_config(shape))
    model = model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]  # HF stubs
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.generation_config.do_sample = False
    return model


def _llama_config(kw: dict[str, Any]) -> Any:  # noqa: ANN401 - HF config
    import transformers  # noqa: PLC0415

    return transformers.LlamaConfig(**kw)


def print_table(rows: list[tuple[str, int, float, float | None]], peak: float) -> None:
    hf_rows = [toks / dt for label, toks, dt, _ in rows if label.startswith("hf:")]
    best = max(hf_rows) if hf_rows else None
    on = next((t / d for label, t, d, _ in rows if label == "hushcc engine"), None)
    print()
    print(f"| {'mode':<36} | {'tokens':>6} | {'s':>7} | {'tok/s':>7} | {'x best HF':>9} "
          f"| {'roofline':>8} |")
    print(f"|{'-' * 38}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
    for label, toks, dt, fl in rows:
        rate = toks / dt
        x = f"{rate / best:.2f}" if best else "-"
        roof = f"{fl / dt / 1e9 / peak:.0%}" if fl else "-"
        print(f"| {label:<36} | {toks:>6} | {dt:>7.2f} | {rate:>7.1f} | {x:>9} | {roof:>8} |")
    off = next((t / d for label, t, d, _ in rows if label.endswith("zeroing off")), None)
    if on and off:
        print(f"erasure overhead (zeroing on vs off): {100 * (off - on) / off:+.1f} % throughput")
    rates = {label: t / d for label, t, d, _ in rows}
    for what, plain, lookup in (
            ("random prompts", "hushcc engine", "hushcc engine + prompt lookup"),
            ("repetitive prompts", "repetitive prompts: engine",
             "repetitive prompts: + prompt lookup"),
            ("repetitive, previous lookup", "repetitive prompts: engine",
             "repetitive: " + PREVIOUS + " + lookup")):
        if plain in rates and lookup in rates:
            print(f"prompt lookup vs plain, {what}: {rates[lookup] / rates[plain]:.2f}x")
    if best and on and PREVIOUS in rates:
        print(f"x best HF, new vs previous engine (same run): {on / best:.2f} vs "
              f"{rates[PREVIOUS] / best:.2f}")
    print(f"load average now: {os.getloadavg()[0]:.2f} (other processes share these cores)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,tiny",
                    help="smollm2, tiny, large (TinyLlama shape), llama8b (Llama-3.1-8B shape)")
    ap.add_argument("--cpu-large", action="store_true", help="build llama8b on CPU too")
    ap.add_argument("--no-previous", dest="previous", action="store_false",
                    help="skip the previous engine's rows")
    ap.add_argument("--quick", action="store_true", help="skip hf:seq (slow)")
    ap.add_argument("--hf-modes", default=None, help="default seq,static32,cb")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--erasure-pairs", type=int, default=3,
                    help="zeroing on/off run pairs (medians compared; one pair is mostly noise)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=int, default=512, help="per-step token budget")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--no-spec", dest="spec", action="store_false")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    if args.hf_modes is None:
        args.hf_modes = "static32,cb" if args.quick else "seq,static32,cb"
    if args.threads:
        torch.set_num_threads(args.threads)
    hf = load_hf_baseline()
    for name in args.models.split(","):
        bench_model(name, args, hf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
