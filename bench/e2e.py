#!/usr/bin/env python
"""The whole private path (SDK -> relay -> node) beside plaintext HTTP to the same engine.

One run, side by side: the same chat workload, streamed, 16 concurrent clients, greedy, in
`--rounds` interleaved rounds (each round every path once, in the order plaintext, plaintext
under hygiene, private), so that drift of a shared machine hits every path alike; every round is
printed, and the comparison uses each path's medians over the rounds.

Rows
  plaintext HTTP      this script's `--serve-plaintext` process: the node's own engine
                      (`node.service.build_engine`) and OpenAI JSON (`node.openai_api`) behind a
                      bare aiohttp route, no OHTTP, no relay, no tokens (a baseline only: the
                      product has no plaintext endpoint). Each request gets a fresh prefix-cache
                      salt, as the node gives a request without `cache_salt` (a fixed salt would
                      let the baseline reuse the chat template's prefill across requests, which
                      the private path never does by default, and time the cache, not the path)
  plaintext, hygiene  the same baseline process under the node's memory hygiene (`node.hygiene`:
                      freed memory overwritten), which `hushcc node serve` always runs under: the
                      gap between the two plaintext rows is the cost of erasing freed memory, the
                      gap between this row and the private one the cost of the private path
  private (SDK)       `client.AsyncClient` through `hushcc relay serve` to `hushcc node serve`
                      (simulated TEE): verified once, tokens fetched in one batch before the
                      clock starts, then every request sealed (chunked OHTTP), relayed, opened
Metrics: time to first token (create() -> first content chunk) p50/p90; throughput =
generated tokens / wall seconds. Goals (issue 15): <= 3 % throughput loss, <= 5 ms added TTFT.
Per hop: the CPU time each process spent per generated token during the round (this client
process, the relay, the node; the plaintext server), read from /proc, and the load average.

Model: SmolLM2-135M-Instruct (the default), `--tiny` for the tiny random test model.

`--pin` gives every engine process (the node, both plaintext servers) one CPU of its own and one
math thread, and everything else (this client, the relay, the log and the issuer) the other CPUs
(`bench/placement.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from bench.placement import ENGINE_THREADS, pin_process, split_cpus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from app.demo import Demo
    from client.session import AsyncClient

Round = tuple[list[float], int, float]

SUBJECTS = ("transparency logs", "blind signatures", "oblivious HTTP", "paged attention",
            "confidential computing", "Merkle trees", "key rotation", "continuous batching")


def workload(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"In {rng.randint(1, 4)} sentences, explain {rng.choice(SUBJECTS)} "
            f"to someone who knows {rng.choice(SUBJECTS)}." for _ in range(n)]


async def serve_plaintext(*, tiny: bool) -> None:
    """The baseline server: the node's engine and API behind a plaintext route."""
    from node.engine.engine import GenerateRequest  # noqa: PLC0415
    from node.engine.sampling import SamplingParams  # noqa: PLC0415
    from node.engine.tokenizer import encode_chat  # noqa: PLC0415
    from node.model_files import load_model, tiny_model  # noqa: PLC0415
    from node.openai_api import CHAT_PATH, ApiLimits, parse_call, stream_event  # noqa: PLC0415
    from node.service import NodeOptions, build_engine  # noqa: PLC0415

    model = tiny_model() if tiny else load_model(None)
    engine = build_engine(model, NodeOptions())

    async def chat(request: web.Request) -> web.StreamResponse:
        call = parse_call(CHAT_PATH, await request.read(), ApiLimits())
        params = SamplingParams(max_tokens=call.max_tokens, temperature=call.temperature)
        stream = engine.submit(GenerateRequest(tuple(encode_chat(model.tokenizer,
                                                                 call.messages)), params),
                               os.urandom(32))  # as the node: no prefix shared across requests
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for delta in stream:
            await response.write(stream_event(
                call, model=model.name, response_id="chatcmpl-bench", created=0,
                text=delta.text, finish_reason=delta.finish_reason))
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


async def drive(prompts: list[str], concurrency: int,
                one: Callable[[str], Awaitable[tuple[float, int]]]) -> Round:
    queue = list(reversed(prompts))
    ttfts: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            ttft, got = await one(queue.pop())
            ttfts.append(ttft)
            tokens += got

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttfts, tokens, time.perf_counter() - started


async def plaintext_round(url: str, prompts: list[str], concurrency: int, max_tokens: int
                          ) -> Round:
    from client.sse import SseDecoder  # noqa: PLC0415

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        async def one(prompt: str) -> tuple[float, int]:
            body = {"model": "m", "stream": True, "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}]}
            started, first, got = time.perf_counter(), 0.0, 0
            decoder = SseDecoder()
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                async for piece in response.content.iter_any():
                    for data in decoder.feed(piece):
                        if data == "[DONE]":
                            continue
                        if json.loads(data)["choices"][0]["delta"].get("content"):
                            first = first or time.perf_counter() - started
                            got += 1
            return first, got
        return await drive(prompts, concurrency, one)


async def private_round(client: AsyncClient, prompts: list[str], concurrency: int,
                        max_tokens: int) -> Round:
    async def one(prompt: str) -> tuple[float, int]:
        started, first, got = time.perf_counter(), 0.0, 0
        stream = await client.chat.completions.create(
            model="m", stream=True, max_tokens=max_tokens, temperature=0,
            messages=[{"role": "user", "content": prompt}])
        async for chunk in stream:  # type: ignore[union-attr]
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                got += 1
        return first, got
    return await drive(prompts, concurrency, one)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny test model")
    parser.add_argument("--n", type=int, default=32, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of every path; the comparison uses medians")
    parser.add_argument("--pin", action="store_true",
                        help="engines on one CPU of their own (one thread), the rest elsewhere")
    parser.add_argument("--serve-plaintext", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plaintext:
        asyncio.run(serve_plaintext(tiny=args.tiny))
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    from app.demo import Demo, stage_issuer, stage_log  # noqa: PLC0415

    prompts = workload(args.n, 1234)
    model = ["--tiny-model"] if args.tiny else []
    with tempfile.TemporaryDirectory(prefix="hushcc-bench-") as tmp, \
            contextlib.ExitStack() as stack, contextlib.redirect_stdout(sys.stderr):
        demo = Demo(Path(tmp), stack)
        engine_cpus, engine_env = _placement(pin=args.pin)
        stage_log(demo, tiny_model=args.tiny)
        stage_issuer(demo)
        node = demo.start("node", "node", "serve", "--host", "127.0.0.1", "--port", "0",
                          "--release", str(demo.path("genuine.release.json")), *model,
                          env=engine_env)
        _pin(node.process.pid, engine_cpus)
        import urllib.request  # noqa: PLC0415

        with urllib.request.urlopen(f"{node.url}/attestation", timeout=30) as reply:  # noqa: S310
            node_id = json.loads(reply.read())["node_id"]
        relay = demo.start("relay", "relay", "serve", "--host", "127.0.0.1", "--port", "0",
                   "--issuer-key", str(demo.path("issuer.key.pub")), "--issuer-name",
                   "issuer.demo.hushcc", "--origin-name", "relay.demo.hushcc",
                   "--node", f"{node_id}={node.url}")
        plain, plain_pid = _start_plaintext(demo, engine_env, tiny=args.tiny, hygiene=False)
        hygienic, hygienic_pid = _start_plaintext(demo, engine_env, tiny=args.tiny, hygiene=True)
        for pid in (plain_pid, hygienic_pid):
            _pin(pid, engine_cpus)
        hops = {"plaintext HTTP": {"client": 0, "server": plain_pid},
                "plaintext, hygiene": {"client": 0, "server": hygienic_pid},
                "private (SDK)": {"client": 0, "relay": relay.process.pid,
                                  "node": node.process.pid}}
        rows = asyncio.run(_rounds(demo, (plain, hygienic), prompts, args, hops))
    _print(rows, args)
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of process `pid`; 0 is this process."""
    if pid == 0:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(pids: dict[str, int], rnd: Awaitable[Round]) -> tuple[Round, dict[str, float]]:
    """Run a round; also return each process's CPU milliseconds per generated token."""
    before = {hop: cpu_seconds(pid) for hop, pid in pids.items()}
    result = await rnd
    tokens = max(result[1], 1)
    return result, {hop: (cpu_seconds(pid) - before[hop]) / tokens * 1e3
                    for hop, pid in pids.items()}


def _placement(*, pin: bool) -> tuple[set[int] | None, dict[str, str]]:
    """The engine processes' CPUs (None: not pinned) and environment. Pinned, this process
    moves to the other CPUs, and so do the processes it starts after (the log, issuer, relay)."""
    if not pin:
        return None, dict(os.environ)
    engine_cpus, other_cpus = split_cpus()
    os.sched_setaffinity(0, other_cpus)
    return engine_cpus, {**os.environ, **ENGINE_THREADS}


def _pin(pid: int, cpus: set[int] | None) -> None:
    if cpus is not None:
        pin_process(pid, cpus)


def _start_plaintext(demo: Demo, base_env: dict[str, str], *, tiny: bool, hygiene: bool
                     ) -> tuple[str, int]:
    import subprocess  # noqa: PLC0415

    from node.hygiene import hygienic_environment  # noqa: PLC0415

    command = [sys.executable, __file__, "--serve-plaintext", *(["--tiny"] if tiny else [])]
    env = hygienic_environment(base_env) if hygiene else base_env
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,  # noqa: S603
                               env=env)
    demo.stack.callback(process.wait, 30)
    demo.stack.callback(process.terminate)
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("listening on "):
        raise SystemExit("the plaintext baseline did not start")
    return line.removeprefix("listening on ").strip(), process.pid


Row = tuple[str, list[float], int, float, dict[str, float], float]


async def _rounds(demo: Demo, plain: tuple[str, str], prompts: list[str],
                  args: argparse.Namespace, hops: dict[str, dict[str, int]]) -> list[Row]:
    from app.demo import client  # noqa: PLC0415

    sdk = client(demo, token_batch=4 * len(prompts) + 8)
    try:
        await sdk.verify()
        await private_round(sdk, prompts[:2], 2, 4)  # warm-up: verification, tokens, caches
        for url in plain:
            await plaintext_round(url, prompts[:2], 2, 4)
        rows: list[Row] = []
        for _ in range(args.rounds):
            for name, rnd in (
                    ("plaintext HTTP", plaintext_round(plain[0], prompts, args.concurrency,
                                                       args.max_tokens)),
                    ("plaintext, hygiene", plaintext_round(plain[1], prompts, args.concurrency,
                                                           args.max_tokens)),
                    ("private (SDK)", private_round(sdk, prompts, args.concurrency,
                                                    args.max_tokens))):
                result, cpu = await measured(hops[name], rnd)
                rows.append((name, *result, cpu, os.getloadavg()[0]))
        return rows
    finally:
        await sdk.close()


def _print(rows: list[Row], args: argparse.Namespace) -> None:
    model = "tiny" if args.tiny else "SmolLM2-135M-Instruct"
    print(f"model: {model}; {args.n} streamed chat requests per round, "
          f"{args.concurrency} concurrent clients, max_tokens {args.max_tokens}, greedy"
          + ("; engines pinned to one CPU, one thread; the rest on the others" if args.pin
             else ""))
    print(f"{'path':<18}{'TTFT p50 ms':>13}{'TTFT p90 ms':>13}{'tokens':>8}{'tok/s':>9}"
          f"{'load':>6}   CPU ms per token, per hop")
    rounds: dict[str, list[tuple[float, float]]] = {}
    for name, ttfts, tokens, wall, cpu, load in rows:
        rate = tokens / wall
        hops = "  ".join(f"{hop} {ms:.3f}" for hop, ms in cpu.items())
        print(f"{name:<18}{pct(ttfts, 0.5) * 1e3:>13.1f}{pct(ttfts, 0.9) * 1e3:>13.1f}"
              f"{tokens:>8}{rate:>9.1f}{load:>6.1f}   {hops}")
        rounds.setdefault(name, []).append((pct(ttfts, 0.5), rate))
    median = {name: (statistics.median(t for t, _ in got), statistics.median(r for _, r in got))
              for name, got in rounds.items()}
    private = median["private (SDK)"]
    for base in ("plaintext HTTP", "plaintext, hygiene"):
        plain = median[base]
        print(f"medians of {args.rounds} rounds, vs {base}: added TTFT p50 "
              f"{(private[0] - plain[0]) * 1e3:+.1f} ms; throughput private/plaintext "
              f"{private[1] / plain[1]:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
