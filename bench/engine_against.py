#!/usr/bin/env python
"""This checkout's engine against an earlier commit's engine, on this machine, in one run.

Issue 16 asks that the CPU does not regress: SmolLM2-135M's ratio to the best Hugging Face mode
must stay at least where it was, "shown by the old and new engine in one run". `bench/engine.py`
cannot show that by itself (its "previous engine" rows run today's runner with the old
sampling), so this script runs the engine of two source trees side by side:

* the earlier tree is `git worktree add --detach` of `--rev` (default `BEFORE_ISSUE_16`, the
  last commit before issue 16's engine work), removed at the end;
* each measurement is a child process of this script with `PYTHONPATH` set to one tree, so each
  imports its own `node.engine`; the child uses only the API both trees share (`PagedRunner`,
  `Engine`, `EngineConfig`, `EngineLimits`, `GenerateRequest`, `SamplingParams`);
* rounds are interleaved (new, old, new, old, ...) so drift of the machine falls on both; the
  table prints every round and the medians;
* Hugging Face's mode (`--hf-mode`, default `cb`, the best on the 2-core CPUs measured so far)
  runs once per round in its own child, from ../shared/bench/hf_baseline.py, on the same weights.

Workload: bench/engine.py's (hf_baseline.build_workload): 32 requests, prompts 16-512 random
tokens, outputs 8-128, EOS off, greedy, prefill included; block size 16, budget 512 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path.pop(0)  # bench/node.py would shadow the `node` package; PYTHONPATH names the tree
HF_BASELINE = REPO.parent / "shared" / "bench" / "hf_baseline.py"
BEFORE_ISSUE_16 = "41f4209"  # "One way to start a service": the parent of the sampler's commit
SALT = b"bench-tenant-salt-0123456789abcdef"


# The children import only the tree on PYTHONPATH, whose bench/ may predate any helper here, so
# this script carries its own loader and driver instead of bench/engine.py's (same workload).
def hf_baseline() -> Any:  # noqa: ANN401 - a module loaded from a path
    spec = importlib.util.spec_from_file_location("hf_baseline", HF_BASELINE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{HF_BASELINE} is needed (the workload and the Hugging Face peer)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_engine(n: int, seed: int) -> dict[str, float]:
    """Child: the engine of the tree on sys.path, on the workload; tokens and seconds."""
    import torch  # noqa: PLC0415

    from node.engine.engine import Engine, EngineConfig, GenerateRequest  # noqa: PLC0415
    from node.engine.model import load_smollm2  # noqa: PLC0415
    from node.engine.runner import PagedRunner  # noqa: PLC0415
    from node.engine.sampling import SamplingParams  # noqa: PLC0415
    from node.engine.sequence import EngineLimits  # noqa: PLC0415
    from node.engine.tokenizer import load_smollm2_tokenizer  # noqa: PLC0415

    weights = load_smollm2()
    reqs = hf_baseline().build_workload(n, weights.config.vocab_size, seed)
    blocks = sum(-(-(len(ids) + out) // 16) for ids, out in reqs) + 8
    runner = PagedRunner(weights, num_blocks=blocks, block_size=16, max_model_len=2048)
    tokenizer = load_smollm2_tokenizer()
    limits = EngineLimits(max_model_len=2048, max_tokens_cap=1024, max_num_seqs=len(reqs),
                          max_num_batched_tokens=512, max_draft_tokens=4)

    async def drive(work: list[tuple[list[int], int]]) -> int:
        engine = Engine(runner, tokenizer, EngineConfig(limits=limits))

        async def one(ids: list[int], out: int) -> int:
            request = GenerateRequest(tuple(ids), SamplingParams(max_tokens=out, ignore_eos=True))
            got = 0
            async for delta in engine.submit(request, SALT):
                got = delta.completion_tokens
            return got

        tokens = sum(await asyncio.gather(*(one(ids, out) for ids, out in work)))
        await engine.close()
        return tokens

    asyncio.run(drive([(ids[:32], 4) for ids, _ in reqs[:4]]))  # warm-up
    started = time.perf_counter()
    tokens = asyncio.run(drive(reqs))
    return {"tokens": tokens, "seconds": time.perf_counter() - started,
            "threads": torch.get_num_threads()}


def measure_hf(mode: str, n: int, seed: int) -> dict[str, float]:
    """Child: Hugging Face's `mode` on SmolLM2 and the same workload; tokens and seconds."""
    import torch  # noqa: PLC0415

    hf = hf_baseline()
    model = hf.build_model("smollm2", "cpu", torch.float32)
    reqs = hf.build_workload(n, model.config.vocab_size, seed)
    runs = {"seq": lambda r: hf.run_seq(model, r, "cpu"),
            "static32": lambda r: hf.run_static(model, r, "cpu", 32),
            "cb": lambda r: hf.run_cb(model, r, argparse.Namespace(  # bench/engine.py's
                cb_num_blocks=128, cb_max_batch_tokens=1024, cb_page_size=256,
                cb_max_requests=32))}
    runs[mode]([(ids[:32], 4) for ids, _ in reqs[:4]])  # warm-up
    started = time.perf_counter()
    out = runs[mode](reqs)
    tokens, seconds = out if isinstance(out, tuple) else (out, time.perf_counter() - started)
    return {"tokens": tokens, "seconds": seconds}


def child(tree: Path, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, __file__, *args], env=env, check=True,  # noqa: S603
                          capture_output=True, text=True, cwd=tree)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=BEFORE_ISSUE_16, help="the earlier tree's commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hf-mode", default="cb", choices=["seq", "static32", "cb"])
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--child", choices=["engine", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "engine":
        print(json.dumps(measure_engine(args.n, args.seed)))
        return 0
    if args.child == "hf":
        print(json.dumps(measure_hf(args.hf_mode, args.n, args.seed)))
        return 0
    hf_baseline()  # fail early when it is absent
    common = ["-n", str(args.n), "--seed", str(args.seed)]
    rates: dict[str, list[float]] = {"new": [], "old": [], "hf": []}
    with tempfile.TemporaryDirectory(prefix="hushcc-against-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",  # noqa: S603, S607
                        str(old), args.rev], check=True)
        try:
            for _ in range(args.rounds):
                for name, tree in (("new", REPO), ("old", old)):
                    got = child(tree, "--child", "engine", *common)
                    rates[name].append(got["tokens"] / got["seconds"])
                got = child(REPO, "--child", "hf", "--hf-mode", args.hf_mode, *common)
                rates["hf"].append(got["tokens"] / got["seconds"])
                print(f"round {len(rates['hf'])}: new {rates['new'][-1]:.1f}, old "
                      f"{rates['old'][-1]:.1f}, hf:{args.hf_mode} {rates['hf'][-1]:.1f} tok/s "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",  # noqa: S603, S607
                            str(old)], check=False)
    hf = statistics.median(rates["hf"])
    print(f"SmolLM2-135M, CPU, {args.n} requests; {args.rounds} interleaved rounds; "
          f"old = {args.rev}, new = this checkout")
    print(f"{'engine':<10} {'tok/s median':>13} {'x hf:' + args.hf_mode:>10}  tok/s per round")
    for name in ("new", "old", "hf"):
        median = statistics.median(rates[name])
        label = f"hf:{args.hf_mode}" if name == "hf" else name
        print(f"{label:<10} {median:>13.1f} {median / hf:>10.2f}  "
              + " ".join(f"{r:.1f}" for r in rates[name]))
    print(f"new / old: {statistics.median(rates['new']) / statistics.median(rates['old']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
