"""Relay and token benchmark: forwarding through `hushcc relay serve` vs straight to the gateway,
Privacy Pass issuance / verification cost, and the in-memory vs Redis spent-token store.

Run: .venv/bin/python bench/relay.py [--requests 2000] [--concurrency 16]
One run, side by side, printed as two tables:
* forwarding: requests/s, p50 and p99 of a 4 KiB `message/ohttp-req` POST (4 KiB answer) to a
  loopback gateway process, directly and through a relay process with its memory store and with
  a Redis store (a real redis-server on loopback); each relay request carries a fresh token;
* tokens: client blind + issuer BlindSign + finalize (one issuance), verify_token, and one
  redemption's spent-store write in memory and in Redis (p50 / p99 of sequential calls).
Goals (issue 13): relay >= 70 % of direct throughput, added p50 <= 1 ms, verification <= 0.2 ms,
Redis redemption p99 <= 1 ms. The client, relay, gateway and Redis share this machine's cores,
so the forwarding table also prints each process's CPU time per request (from /proc, which a
busy machine inflates less than it does the wall clock) and the throughput those costs allow
when every core is busy: on 2 cores a relay costs what a second gateway and client would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiohttp import ClientSession, TCPConnector, web  # noqa: E402

from app.cli import main as hushcc  # noqa: E402
from relay.authscheme import format_authorization  # noqa: E402
from relay.blindrsa import BlindSigner  # noqa: E402
from relay.directory import NodeDirectory, NodeEntry  # noqa: E402
from relay.guard import GuardedSite  # noqa: E402
from relay.issuer_keys import read_pinned_key, read_private_key  # noqa: E402
from relay.privacypass import (  # noqa: E402
    TokenChallenge,
    begin_issuance,
    finalize_token,
    issue,
    verify_token,
)
from relay.redemption import Redeemer, relay_challenge  # noqa: E402
from relay.server import RelayServer  # noqa: E402
from relay.spent import MemorySpentStore, RedisSpentStore  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from relay.issuer_keys import PinnedKey

NODE_ID = "ab" * 32
BODY = os.urandom(4096)
ANSWER = os.urandom(4096)
CHALLENGE = TokenChallenge(2, "issuer.bench", b"", "relay.bench")


def _gateway_app() -> web.Application:
    """A gateway stand-in: every POST /ohttp gets a 4 KiB answer."""

    async def ohttp(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="message/ohttp-res")

    async def attestation(_request: web.Request) -> web.Response:
        return web.json_response({"node": "bench"})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/ohttp", ohttp)
    app.router.add_get("/attestation", attestation)
    return app


def gateway_child(port_file: str) -> None:
    """The gateway stand-in in its own process; writes its port to `port_file`."""

    async def main() -> None:
        runner = web.AppRunner(_gateway_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        Path(port_file).write_text(str(runner.addresses[0][1]))  # noqa: ASYNC240 - once
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def _spawn(args: list[str], ready: Callable[[subprocess.Popen[str]], str]) -> tuple[
        subprocess.Popen[str], str]:
    process = subprocess.Popen(  # noqa: S603 - our own command line
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    return process, ready(process)


def _listening(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit("service did not start")
    return line.split("listening on ", 1)[1].strip()


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` (None: this process)."""
    if pid is None:
        return sum(os.times()[:2])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(url: str, headers: list[dict[str, str]], concurrency: int) -> tuple[
        float, list[float]]:
    """POST 4 KiB to `url` once per header set, `concurrency` at a time; (seconds, latencies)."""
    latencies: list[float] = []
    queue = list(reversed(headers))
    async with ClientSession(connector=TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            while queue:
                h = queue.pop()
                started = time.perf_counter()
                async with session.post(url, data=BODY, headers=h) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"unexpected status {r.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


async def _timed_async(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


def _row(name: str, values: list[float], extra: str = "") -> str:
    return (f"{name:<38} {statistics.median(values) * 1e3:>9.3f} "
            f"{_percentile(values, 0.99) * 1e3:>9.3f} {extra}")


def main() -> None:  # noqa: PLR0915, C901 - one linear script: set up, measure, print
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gateway-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gateway_child:
        gateway_child(args.gateway_child)
        return
    redis_binary = shutil.which("redis-server")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key_path = work / "issuer.key"
        hushcc(["issuer", "keygen", "--out", str(key_path)])
        pinned = read_pinned_key(work / "issuer.key.pub")
        signer = BlindSigner(read_private_key(key_path))
        key = pinned.key

        def mint() -> str:
            request, state = begin_issuance(key, CHALLENGE)
            return format_authorization(finalize_token(key, state, issue(signer, key, request)))

        issuance = _timed(mint, 200)
        request, state = begin_issuance(key, CHALLENGE)
        sample = finalize_token(key, state, issue(signer, key, request))
        verification = _timed(lambda: verify_token(key, sample, CHALLENGE), 2000)

        port_file = work / "gateway.port"
        gateway = subprocess.Popen(  # noqa: S603 - this script
            [sys.executable, __file__, "--gateway-child", str(port_file)], cwd=REPO, text=True)
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise SystemExit("gateway did not start")
            time.sleep(0.05)
        gateway_url = f"http://127.0.0.1:{port_file.read_text()}"
        redis_port = _free_port()
        redis = subprocess.Popen(  # noqa: S603 - Debian's redis-server
            [redis_binary or "redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
             "--dir", tmp, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if redis_binary else None
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        results: dict[str, list[tuple[float, list[float]]]] = {}
        cpu: dict[str, dict[str, float]] = {}  # path -> process -> CPU seconds, timed rounds
        relays: list[subprocess.Popen[str]] = []
        processes: dict[str, subprocess.Popen[str]] = {}
        try:
            targets = {"direct to gateway": gateway_url + "/ohttp"}
            stores: list[tuple[str, list[str]]] = [("relay, memory spent store", [])]
            if redis is not None:
                stores.append(("relay, Redis spent store", ["--redis", redis_url]))
            for name, extra in stores:
                relay, url = _spawn(
                    [sys.executable, "-m", "app", "relay", "serve", "--port", "0",
                     "--issuer-key", str(work / "issuer.key.pub"), "--issuer-name",
                     "issuer.bench", "--origin-name", "relay.bench", "--node",
                     f"{NODE_ID}={gateway_url}", *extra], _listening)
                relays.append(relay)
                processes[name] = relay
                targets[name] = f"{url}/v1/nodes/{NODE_ID}/ohttp"
            per_round = args.requests // args.rounds
            for round_ in range(args.rounds + 1):  # round 0 warms every path up, untimed
                count = 100 if round_ == 0 else per_round
                for name, target in targets.items():
                    headers = [{"Content-Type": "message/ohttp-req"} | (
                        {} if name.startswith("direct") else {"Authorization": mint()})
                        for _ in range(count)]
                    pids = {"client": None, "gateway": gateway.pid} | (
                        {} if name.startswith("direct") else {"relay": processes[name].pid})
                    before = {k: _cpu_seconds(pid) for k, pid in pids.items()}
                    outcome = asyncio.run(_load(target, headers, args.concurrency))
                    if round_:
                        results.setdefault(name, []).append(outcome)
                        used = cpu.setdefault(name, {})
                        for k, pid in pids.items():
                            used[k] = used.get(k, 0.0) + _cpu_seconds(pid) - before[k]
            memory_spend, redis_spend = asyncio.run(_stores(redis_url if redis else None))
            in_process = asyncio.run(_in_process(pinned, mint))
        finally:
            for relay in relays:
                _stop(relay)
            _stop(gateway)
            if redis is not None:
                redis.kill()
                redis.wait()

    _print_tables(args, results, [issuance, verification, memory_spend, redis_spend])
    _print_cpu(results, cpu)
    direct_p50, relay_p50 = (statistics.median(x) for x in in_process)
    print("\nSame, sequential, gateway and relay (memory store) in this one event loop, so no "
          "process\nscheduling between hops: the relay's own cost per request")
    print(_row("direct to gateway (in process)", in_process[0]))
    print(_row("through relay (in process)", in_process[1],
               f"+{(relay_p50 - direct_p50) * 1e3:.3f} ms p50"))

def _print_tables(args: argparse.Namespace, results: dict[str, list[tuple[float, list[float]]]],
                  costs: list[list[float]]) -> None:
    issuance, verification, memory_spend, redis_spend = costs
    print(f"\nForwarding 4 KiB message/ohttp-req (4 KiB answers): {args.rounds} interleaved "
          f"rounds of {args.requests // args.rounds} requests per path, {args.concurrency} "
          f"concurrent, loopback, {os.cpu_count()} cores shared by client, relay, gateway, Redis")
    print(f"{'path':<38} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'vs direct':>10}  "
          "rates per round")

    def summary(name: str) -> tuple[float, list[float], list[float]]:
        rates = [len(lat) / seconds for seconds, lat in results[name]]
        latencies = [x for _, lat in results[name] for x in lat]
        return statistics.median(rates), latencies, rates

    base_rate, base_lat, _ = summary("direct to gateway")
    base_p50 = statistics.median(base_lat)
    for name in results:
        rate, lat, rates = summary(name)
        note = "" if name.startswith("direct") else (
            f"{rate / base_rate:>9.0%} +{(statistics.median(lat) - base_p50) * 1e3:.2f} ms p50")
        print(f"{name:<38} {rate:>9.0f} {statistics.median(lat) * 1e3:>9.2f} "
              f"{_percentile(lat, 0.99) * 1e3:>9.2f} {note:<24} "
              + " ".join(f"{r:.0f}" for r in rates))
    print(f"\nToken costs (sequential calls)\n{'operation':<38} {'p50 ms':>9} {'p99 ms':>9}")
    print(_row("issuance (blind + BlindSign + finalize)", issuance))
    print(_row("verify_token (RSASSA-PSS 2048)", verification))
    print(_row("spent store: memory", memory_spend))
    if redis_spend:
        print(_row("spent store: Redis SET NX EXAT", redis_spend))



def _print_cpu(results: dict[str, list[tuple[float, list[float]]]],
               cpu: dict[str, dict[str, float]]) -> None:
    cores = os.cpu_count() or 1
    print(f"\nCPU time per request (us, timed rounds) and the req/s those costs allow on "
          f"{cores} busy cores\n{'path':<38} {'client':>7} {'relay':>7} {'gateway':>8} "
          f"{'bound':>8} {'measured':>9}")
    for name, used in cpu.items():
        count = sum(len(lat) for _, lat in results[name])
        per = {k: v / count * 1e6 for k, v in used.items()}
        # The slowest single process, or all processes sharing every core, whichever binds.
        bound = min(1e6 / max(per.values()), cores * 1e6 / sum(per.values()))
        measured = count / sum(seconds for seconds, _ in results[name])
        print(f"{name:<38} {per['client']:>7.0f} {per.get('relay', 0):>7.0f} "
              f"{per['gateway']:>8.0f} {bound:>8.0f} {measured:>9.0f}")


async def _in_process(pinned: PinnedKey, mint: Callable[[], str]) -> tuple[
        list[float], list[float]]:
    """Sequential 4 KiB requests, direct and through a relay, all in this event loop."""
    gateway = web.AppRunner(_gateway_app(), access_log=None)
    await gateway.setup()
    await web.TCPSite(gateway, "127.0.0.1", 0).start()
    gateway_url = f"http://127.0.0.1:{gateway.addresses[0][1]}"
    challenge = relay_challenge("issuer.bench", "relay.bench")
    server = RelayServer(NodeDirectory([NodeEntry(NODE_ID, gateway_url)]),
                         Redeemer(pinned, challenge, MemorySpentStore()))
    relay = web.AppRunner(server.app(), access_log=None)
    await relay.setup()
    await GuardedSite(relay, "127.0.0.1", 0, server.guard).start()
    relay_url = f"http://127.0.0.1:{relay.addresses[0][1]}/v1/nodes/{NODE_ID}/ohttp"
    try:
        tokens = [{"Content-Type": "message/ohttp-req", "Authorization": mint()}
                  for _ in range(330)]
        await _load(gateway_url + "/ohttp", [{"Content-Type": "message/ohttp-req"}] * 30, 1)
        await _load(relay_url, tokens[:30], 1)
        _, direct = await _load(gateway_url + "/ohttp",
                                [{"Content-Type": "message/ohttp-req"}] * 300, 1)
        _, relayed = await _load(relay_url, tokens[30:], 1)
    finally:
        await relay.cleanup()
        await gateway.cleanup()
    return direct, relayed


async def _stores(redis_url: str | None) -> tuple[list[float], list[float]]:
    memory = MemorySpentStore()
    counter = iter(range(10**9))
    expiry = time.time() + 3600
    memory_times = await _timed_async(
        lambda: memory.spend(next(counter).to_bytes(32, "big"), expiry), 5000)
    if redis_url is None:
        return memory_times, []
    store = RedisSpentStore(redis_url)
    try:
        await _timed_async(lambda: store.spend(next(counter).to_bytes(32, "big"), expiry), 200)
        redis_times = await _timed_async(
            lambda: store.spend(next(counter).to_bytes(32, "big"), expiry), 5000)
    finally:
        await store.close()
    return memory_times, redis_times


if __name__ == "__main__":
    main()
