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
  hushcc engine + prompt lookup  speculative decoding (random prompts: no repeats to find)
  repetitive: plain / lookup     a workload whose prompts repeat n-grams (where lookup can help)

Roofline: GEMM GFLOP/s measured here with the same threads through torch.matmul (MKL on CPU)
and oneDNN's prepacked linear, the faster taken as the machine's peak; workload FLOPs = per computed
token 2 x (non-embedding matmul params) + attention (4 x layers x q_dim x context) and
2 x vocab x hidden per logits row. Fraction = achieved FLOP/s / measured GEMM FLOP/s.
Memory-aware bound: the engine's own schedule (steps traced) costed per step as the larger of
its FLOPs at the GEMM peak and its weight + KV bytes at the measured read bandwidth; it says how
much of the gap to the compute roofline is the workload's memory-bound decode tail.
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

    from node.engine.batch import ForwardChunk
    from node.engine.detokenize import Decoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.engine.engine import Engine, EngineConfig, GenerateRequest
from node.engine.linear import PackedLinear
from node.engine.model import LlamaWeights, ModelConfig, random_weights
from node.engine.runner import PagedRunner
from node.engine.sampling import SamplingParams
from node.engine.sequence import EngineLimits
from node.engine.speculative import PromptLookupConfig

HF_BASELINE = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "hf_baseline.py"
SALT = b"bench-tenant-salt-0123456789abcdef"
LARGE: dict[str, Any] = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
         "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
         "max_position_embeddings": 2048}  # TinyLlama-1.1B shape, random weights


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


def run_engine(
    runner: PagedRunner | NoZeroRunner | TimedZeroRunner, tokenizer: Decoder, reqs: Workload,
    args: argparse.Namespace,
    spec: PromptLookupConfig | None = None,
) -> tuple[int, float]:
    limits = EngineLimits(max_model_len=2048, max_tokens_cap=1024, max_num_seqs=len(reqs),
                          max_num_batched_tokens=args.budget, max_draft_tokens=4)
    cfg = EngineConfig(limits=limits, speculative=spec)
    engine = Engine(runner, tokenizer, cfg)
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
    print(f"\n=== model {name}  device {args.device}  dtype {args.dtype}  "
          f"threads {torch.get_num_threads()} ===", flush=True)
    t0 = time.perf_counter()
    hf_model = None
    if name == "large":  # random weights in transformers' own init, shared by both sides
        hf_model = _large_model(args.device, dtype) if hf is not None else None
        if hf_model is None:
            weights = random_weights(ModelConfig.from_hf(_llama_config(LARGE)), 0, std=0.02)
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
                         PromptLookupConfig | None, Workload]]
    variants = [("hushcc engine", timed, None, reqs),
                ("hushcc engine, zeroing off", NoZeroRunner(runner), None, reqs)]
    if args.spec:
        lookup = PromptLookupConfig(num_draft=4, max_ngram=3)
        rep = repetitive_workload(args.n, mc.vocab_size, args.seed)
        variants += [("hushcc engine + prompt lookup", runner, lookup, reqs),
                     ("repetitive prompts: engine", runner, None, rep),
                     ("repetitive prompts: + prompt lookup", runner, lookup, rep)]
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
    for label, r, spec, wl in variants[2:]:
        toks, dt = run_engine(r, tokenizer, wl, args, spec)
        add(label, toks, dt)
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


def _large_model(device: str, dtype: torch.dtype) -> Any:  # noqa: ANN401 - HF model
    import transformers  # noqa: PLC0415

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_llama_config(LARGE))
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
    print(f"load average now: {os.getloadavg()[0]:.2f} (other processes share these cores)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,tiny", help="smollm2, tiny, large (random)")
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
