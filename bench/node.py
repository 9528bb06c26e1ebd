#!/usr/bin/env python
"""The node's gateway against the same engine called in process, in one run, side by side.

Workload (bench/engine.py's): N=32 requests, prompt lengths uniform in [16, 512], output lengths
uniform in [8, 128], seed 1234, random token ids, EOS off, greedy; 16 concurrent clients each
taking the next request when its previous one ends.

Rows
  engine in process   node.service.build_engine(model, defaults): Engine.submit, deltas consumed
  gateway in process  the pure `node.gateway.Gateway` over the same engine in this process (no
                      HTTP, no second process): the cost of OHTTP + binary HTTP + JSON + padding
                      + sealing, and the client's opening, alone
  engine, child       the same engine in a child process (`--engine-json`), as the node is one:
                      it separates the cost of being another process from the rest
  engine, node hygiene  that child under the node's memory hygiene (`node.hygiene`: freed blocks
                      zeroed, PYTHONMALLOC=malloc), which `hushcc node serve` always runs under:
                      it separates the cost of erasing freed memory from the cost of the gateway
  gateway (node)      `hushcc node serve` as a subprocess on loopback; each request a chunked
                      OHTTP `POST /v1/completions` with the token ids as `prompt`, `stream: true`,
                      `ignore_eos: true`; the client seals, sends, and decrypts every chunk
Metrics: time to first token (submit -> first delta / first decrypted SSE event), p50 and p90;
CPU milliseconds per generated token of the process that runs the engine (the node for the
gateway row; the bench client's own share is printed below the table); the load average;
throughput = generated tokens / wall seconds. The paths run in `--rounds` interleaved rounds (each
round every path once, the node started once and kept warm) so that drift of a shared machine hits
every path alike; the table prints per-path medians of the rounds and each round's tok/s. Added
TTFT p50 = gateway p50 - engine p50; ratio = gateway throughput / engine throughput.

Under 16 clients a request's TTFT is mostly its wait for admission behind the others' prefills,
so a 1 % change in throughput moves it by more than the gateway adds. A second table therefore
gives each path's TTFT unloaded: the first 8 prompts one at a time, max_tokens 1, where TTFT is
the prefill plus what the path itself adds (OHTTP, binary HTTP, HTTP, the process boundary).

Model: the tiny test model by default (engine cost per token is tiny, so this prices the
gateway's overhead at its worst), `--smollm2` for SmolLM2-135M-Instruct.

`--pin` runs every engine (in this process, the children, the node) on one CPU of its own with
one math thread, and the bench client of the node row on the other CPUs (`bench/placement.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from node.model_files import LoadedModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.placement import ENGINE_THREADS, split_cpus
from node.engine.engine import GenerateRequest
from node.engine.sampling import SamplingParams
from node.gateway import Sealed
from node.model_files import load_model, tiny_model, write_tiny_model
from node.service import NodeOptions, build_engine
from ohttp.bhttp import Request, encode_request
from ohttp.bhttp_stream import ResponseStreamDecoder
from ohttp.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder
from ohttp.keyconfig import KeyConfig, parse_key_configs
from ohttp.replay import http_date

Workload = list[tuple[list[int], int]]
SALT = b"bench-tenant-salt-0123456789abcdef"
UNLOADED = 8  # requests of the unloaded TTFT table


def build_workload(n: int, vocab: int, seed: int) -> Workload:
    len_rng, tok_rng = random.Random(seed), random.Random(seed + 1)
    lens = [(len_rng.randint(16, 512), len_rng.randint(8, 128)) for _ in range(n)]
    return [([tok_rng.randrange(3, vocab) for _ in range(p)], o) for p, o in lens]


async def clients(reqs: Workload, concurrency: int,
                  one: Callable[[list[int], int], Awaitable[tuple[float, int]]]
                  ) -> tuple[list[float], int, float]:
    queue = list(reversed(reqs))
    ttfts: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            ids, out = queue.pop()
            ttft, got = await one(ids, out)
            if got != out:
                raise RuntimeError("a request produced the wrong number of tokens")
            ttfts.append(ttft)
            tokens += got

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttfts, tokens, time.perf_counter() - t0


def run_engine(model: LoadedModel, reqs: Workload, concurrency: int
               ) -> tuple[list[float], int, float]:
    async def go() -> tuple[list[float], int, float]:
        engine = build_engine(model, NodeOptions())

        async def one(ids: list[int], out: int) -> tuple[float, int]:
            t0 = time.perf_counter()
            ttft, got = 0.0, 0
            params = SamplingParams(max_tokens=out, ignore_eos=True)
            async for delta in engine.submit(GenerateRequest(tuple(ids), params), SALT):
                if not ttft:
                    ttft = time.perf_counter() - t0
                got = delta.completion_tokens
            return ttft, got

        try:
            return await clients(reqs, concurrency, one)
        finally:
            await engine.close()
    return asyncio.run(go())


def start_node(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "app", "node", "serve", "--host", "127.0.0.1",
               "--port", "0", *args]
    node = subprocess.Popen(command, stdout=subprocess.PIPE,  # noqa: S603 - our own command
                            stderr=subprocess.DEVNULL, text=True)
    line = node.stdout.readline().strip() if node.stdout else ""
    if not line.startswith("listening on "):
        node.kill()
        raise RuntimeError("the node did not start")
    return node, line.removeprefix("listening on ")


class Exchange:
    """One bench request as the client side of OHTTP: sealed, then every chunk opened."""

    def __init__(self, config: KeyConfig, ids: list[int], out: int) -> None:
        body = json.dumps({"prompt": ids, "max_tokens": out, "temperature": 0,
                           "stream": True, "ignore_eos": True,
                           "stream_options": {"include_usage": True}}).encode()
        headers = ((b"content-type", b"application/json"),
                   (b"date", http_date(datetime.now(UTC)).encode()))  # the node requires it
        inner = encode_request(Request(b"POST", b"https", b"node", b"/v1/completions",
                                       headers, body))
        self.started = time.perf_counter()
        sender = ChunkedRequestEncoder(config)
        self.sealed = sender.final(inner)
        self._opener = ChunkedResponseDecoder(sender.context)
        self._reader = ResponseStreamDecoder()
        self.ttft, self.got = 0.0, 0

    def feed(self, data: bytes) -> None:
        """Open what arrived; note the first text event's time and the usage's token count."""
        for plain in self._opener.feed(data):
            for event in self._reader.feed(plain):
                if not isinstance(event, bytes):
                    continue
                if b'"text"' in event:
                    self.ttft = self.ttft or time.perf_counter() - self.started
                elif b'"usage"' in event:
                    doc = json.loads(event.split(b"data: ", 1)[1])
                    self.got = doc["usage"]["completion_tokens"]

    def finish(self) -> tuple[float, int]:
        """The final chunk must have arrived; (TTFT, tokens)."""
        self._opener.finish()
        return self.ttft, self.got


def run_gateway(url: str, reqs: Workload, concurrency: int) -> tuple[list[float], int, float]:
    async def go() -> tuple[list[float], int, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            async with session.get(url + "/attestation") as r:
                bundle = json.loads(await r.read())
            import base64  # noqa: PLC0415

            config = parse_key_configs(base64.b64decode(bundle["key_config"]))[0]

            async def one(ids: list[int], out: int) -> tuple[float, int]:
                exchange = Exchange(config, ids, out)
                async with session.post(url + "/ohttp", data=exchange.sealed, headers={
                        "Content-Type": "message/ohttp-chunked-req"}) as response:
                    async for data, _ in response.content.iter_chunks():
                        exchange.feed(data)
                return exchange.finish()

            return await clients(reqs, concurrency, one)
    return asyncio.run(go())


def run_gateway_in_process(model: LoadedModel, reqs: Workload, concurrency: int
                           ) -> tuple[list[float], int, float]:
    """The pure `node.gateway.Gateway` over the same engine in this process: no HTTP, no
    second process, no memory hygiene; the client seals and opens in the same loop."""
    from node.gateway import Gateway, ServedModel  # noqa: PLC0415
    from node.keys import KeyRing, RotationPolicy  # noqa: PLC0415
    from ohttp.replay import ReplayGuard  # noqa: PLC0415

    async def go() -> tuple[list[float], int, float]:
        engine = build_engine(model, NodeOptions())
        keys = KeyRing(RotationPolicy(timedelta(hours=1), timedelta(minutes=5)),
                       now=datetime.now(UTC), rng=os.urandom)
        gateway = Gateway(keys=keys, engine=engine, model=ServedModel(model.name,
                                                                      model.tokenizer),
                          replay=ReplayGuard(), clock=lambda: datetime.now(UTC),
                          rng=os.urandom, salt_key=os.urandom(32))

        async def one(ids: list[int], out: int) -> tuple[float, int]:
            exchange = Exchange(keys.current.key.config, ids, out)
            answer = await gateway.handle("message/ohttp-chunked-req", exchange.sealed)
            if not isinstance(answer, Sealed):
                raise RuntimeError("the gateway refused a bench request")  # noqa: TRY004
            async for chunk in answer.chunks:
                exchange.feed(chunk)
            return exchange.finish()

        try:
            return await clients(reqs, concurrency, one)
        finally:
            await engine.close()
    return asyncio.run(go())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Row = tuple[str, list[float], int, float, float, float]  # name, ttfts, tokens, wall, cpu, load


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_row(name: str, model: LoadedModel, reqs: Workload, concurrency: int,
               run: Callable[[LoadedModel, Workload, int], tuple[list[float], int, float]]
               = run_engine) -> Row:
    """`run` (the engine, or the pure gateway) in this process: warm-up, one measured run."""
    run(model, reqs[:4], concurrency)  # warm-up (oneDNN packing, allocator)
    cpu = time.process_time()
    ttfts, tokens, wall = run(model, reqs, concurrency)
    used = (time.process_time() - cpu) / max(tokens, 1) * 1e3
    return name, ttfts, tokens, wall, used, os.getloadavg()[0]


def child_rows(args: argparse.Namespace, *, hygiene: bool) -> tuple[Row, Row]:
    """The engine in a child process, under the node's memory-hygiene environment or without
    it: the loaded row and the unloaded one."""
    from node.hygiene import hygienic_environment  # noqa: PLC0415

    command = [sys.executable, __file__, "--engine-json", "-n", str(args.n), "--concurrency",
               str(args.concurrency), "--seed", str(args.seed),
               *(["--smollm2"] if args.smollm2 else [])]
    env = hygienic_environment(os.environ) if hygiene else dict(os.environ)
    done = subprocess.run(command, env=env, check=True,  # noqa: S603
                          capture_output=True, text=True)
    name = "engine, node hygiene" if hygiene else "engine, child"
    loaded, unloaded = json.loads(done.stdout.splitlines()[-1])
    return (name, *loaded[1:]), (name, *unloaded[1:])


def node_row(url: str, pid: int, reqs: Workload, concurrency: int) -> tuple[Row, float]:
    """One measured run through the node; the row and the bench client's CPU ms per token."""
    before, client = cpu_seconds(pid), time.process_time()
    ttfts, tokens, wall = run_gateway(url, reqs, concurrency)
    node_cpu = (cpu_seconds(pid) - before) / max(tokens, 1) * 1e3
    client_cpu = (time.process_time() - client) / max(tokens, 1) * 1e3
    return ("gateway (node)", ttfts, tokens, wall, node_cpu, os.getloadavg()[0]), client_cpu


def summarise(rounds: list[Row]) -> tuple[str, float, float, float, float, float, list[float]]:
    """A path's rounds: name, median TTFT p50 and p90, median tok/s, CPU, load; rates."""
    rates = [tokens / wall for _, _, tokens, wall, _, _ in rounds]
    return (rounds[0][0], statistics.median(pct(r[1], .5) for r in rounds),
            statistics.median(pct(r[1], .9) for r in rounds), statistics.median(rates),
            statistics.median(r[4] for r in rounds), max(r[5] for r in rounds), rates)


def report(args: argparse.Namespace, n: int, paths: list[list[Row]],
           unloaded: list[list[Row]], client_cpu: list[float]) -> None:
    """Print the loaded table, the ratios, and the unloaded table."""
    rows = [summarise(rounds) for rounds in paths]
    print(f"model: {'SmolLM2-135M' if args.smollm2 else 'tiny'}; {n} requests, "
          f"{args.concurrency} concurrent clients; {args.rounds} interleaved round(s), medians"
          + ("; engines pinned to one CPU, one thread; the client on the others" if args.pin
             else ""))
    print(f"{'path':<22} {'TTFT p50 ms':>12} {'TTFT p90 ms':>12} {'tok/s':>9} "
          f"{'CPU ms/tok':>11} {'load':>5}  tok/s per round")
    for name, p50, p90, rate, cpu, load, rates in rows:
        print(f"{name:<22} {p50 * 1e3:>12.2f} {p90 * 1e3:>12.2f} {rate:>9.1f} {cpu:>11.3f} "
              f"{load:>5.1f}  {' '.join(f'{r:.1f}' for r in rates)}")
    print(f"(gateway CPU is the node process's; the bench client spent "
          f"{statistics.median(client_cpu):.3f} ms/tok more on the same cores)")
    engine, _, child, hygiene, gateway = rows
    for base in (engine, child, hygiene):
        print(f"vs {base[0]}: added TTFT p50 {(gateway[1] - base[1]) * 1e3:.2f} ms; "
              f"throughput ratio {gateway[3] / base[3]:.3f}")
    print(f"\nUnloaded: the first {UNLOADED} prompts one at a time, max_tokens 1 (TTFT is then the "
          "prefill plus what the path adds; medians of the rounds)")
    print(f"{'path':<22} {'TTFT p50 ms':>12} {'TTFT p90 ms':>12}  added p50 ms vs engine / child"
          " / hygiene")
    alone = [summarise(rounds) for rounds in unloaded]
    for name, p50, p90, *_ in alone:
        added = " / ".join(f"{(p50 - alone[i][1]) * 1e3:+.2f}" for i in (0, 2, 3))
        print(f"{name:<22} {p50 * 1e3:>12.2f} {p90 * 1e3:>12.2f}  {added}")


def placement(*, pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """With `pin`: the engines' CPU and the client's (`bench.placement`); engines get one math
    thread (this process's now, the children's through the environment)."""
    if not pin:
        return None, None
    engine_cpus, client_cpus = split_cpus()
    import torch  # noqa: PLC0415 - loaded already, through the engine

    os.environ.update(ENGINE_THREADS)
    torch.set_num_threads(1)
    return engine_cpus, client_cpus


def move_to(cpus: set[int] | None) -> None:
    """This thread (and the threads and processes it starts from now on) onto `cpus`."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M, not the tiny model")
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of every path; the table prints medians")
    parser.add_argument("--pin", action="store_true",
                        help="engines on one CPU of their own (one thread), the client elsewhere")
    parser.add_argument("--engine-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smollm2:
            model, node_args = load_model(None), []
        else:
            model = tiny_model()
            node_args = ["--model", str(write_tiny_model(Path(tmp) / "tiny"))]
        reqs = build_workload(args.n, model.weights.config.vocab_size, args.seed)
        if not args.smollm2:  # the tiny model holds 512 positions: keep prompt + output inside
            reqs = [(ids[: 512 - out - 1], out) for ids, out in reqs]
        alone = [(ids, 1) for ids, _ in reqs[:UNLOADED]]
        if args.engine_json:
            print(json.dumps([engine_row("child", model, reqs, args.concurrency),
                              engine_row("child", model, alone, 1)]))
            return 0
        paths: list[list[Row]] = [[], [], [], [], []]
        unloaded: list[list[Row]] = [[], [], [], [], []]
        client_cpu: list[float] = []
        engine_cpus, client_cpus = placement(pin=args.pin)
        move_to(engine_cpus)  # the node and the children inherit it
        node, url = start_node(node_args)
        try:
            run_gateway(url, reqs[:4], args.concurrency)  # warm-up
            for _ in range(args.rounds):  # interleaved: drift of the machine hits every path
                move_to(engine_cpus)
                for i, (name, run) in enumerate((("engine in process", run_engine),
                                                 ("gateway in process", run_gateway_in_process))):
                    paths[i].append(engine_row(name, model, reqs, args.concurrency, run))
                    unloaded[i].append(engine_row(name, model, alone, 1, run))
                for i, hygiene in ((2, False), (3, True)):
                    loaded_row, unloaded_row = child_rows(args, hygiene=hygiene)
                    paths[i].append(loaded_row)
                    unloaded[i].append(unloaded_row)
                move_to(client_cpus)
                row, client = node_row(url, node.pid, reqs, args.concurrency)
                paths[4].append(row)
                client_cpu.append(client)
                unloaded[4].append(node_row(url, node.pid, alone, 1)[0])
        finally:
            node.terminate()
            node.wait(timeout=60)
    report(args, len(reqs), paths, unloaded, client_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
