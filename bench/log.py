"""Transparency-log benchmark: batched durable appends, proof generation and verification.

Run: .venv/bin/python bench/log.py [--max-size 1000000] [--seconds 3]
Prints two tables: append throughput (fsync on every batch) with 1, 8 and 64 concurrent
writers, through the storage + batching layer and through the HTTP server; and inclusion /
consistency proof generation and verification times at 10^3, 10^5 and 10^6 entries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiohttp import ClientSession, TCPConnector  # noqa: E402

from transparency_log import merkle  # noqa: E402
from transparency_log.entry import ReleaseEntry, sign_entry  # noqa: E402
from transparency_log.keys import write_key_pair  # noqa: E402
from transparency_log.note import Signer  # noqa: E402
from transparency_log.server import Batcher  # noqa: E402
from transparency_log.storage import LogStorage, parse_records  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable


def _entry(i: int) -> ReleaseEntry:
    return ReleaseEntry.from_value({
        "schema": "hushcc.release/v1",
        "image": {"digest": f"sha256:{i:064x}", "verity_root": f"{i:064x}"},
        "measurements": {"sim": f"{i:096x}"},
        "model": {"name": "SmolLM2-135M-Instruct"},
        "source": {"commit": f"{i:040x}"},
    })


async def _storage_writers(writers: int, seconds: float, *, repeat: bool = False
                           ) -> tuple[float, int, int]:
    """Distinct entries (each appended), or with `repeat` one entry re-added (deduplicated)."""
    with tempfile.TemporaryDirectory() as d:
        storage = LogStorage(d, Signer.generate("bench.log"))
        batcher = Batcher(storage)
        batcher.start()
        done = 0
        stop = time.perf_counter() + seconds

        async def writer() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await batcher.add(_entry(0 if repeat else done + 1).to_bytes())
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = time.perf_counter() - start
        await batcher.close()
        storage.close()
        return done / elapsed, done, batcher.batches


async def _http_writers(writers: int, seconds: float) -> tuple[float, int, int]:
    """Server in its own process (`hushcc log serve`), writers in this one."""
    with tempfile.TemporaryDirectory() as d:
        release, log = Signer.generate("bench.release"), Signer.generate("bench.log")
        write_key_pair(Path(d) / "log.key", log)
        write_key_pair(Path(d) / "rel.key", release)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "log", "serve", "--port", "0",
            "--state-dir", str(Path(d) / "state"), "--log-key", str(Path(d) / "log.key"),
            "--release-key", str(Path(d) / "rel.key.pub"),
            stdout=asyncio.subprocess.PIPE, cwd=str(REPO))
        assert proc.stdout is not None
        base = (await proc.stdout.readline()).decode().split()[-1]
        done = 0
        stop = time.perf_counter() + seconds
        async with ClientSession(connector=TCPConnector(limit=writers)) as session:

            async def writer(k: int) -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    body = sign_entry(_entry(k * 10**9 + done), release)  # never a repeat
                    async with session.post(base + "/add", data=body) as r:
                        if r.status != 200:
                            raise RuntimeError(f"HTTP {r.status}")
                        await r.read()
                    done += 1

            start = time.perf_counter()
            await asyncio.gather(*(writer(k) for k in range(writers)))
            elapsed = time.perf_counter() - start
        proc.terminate()
        await proc.wait()
        batches = sum(1 for kind, *_ in parse_records((Path(d) / "state" / "log").read_bytes())
                      if kind == b"C") - 1
        return done / elapsed, done, batches


def _time_us(fn: Callable[[], object], reps: int) -> float:
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    return statistics.median(samples)


def _proof_row(tree: merkle.MerkleTree, n: int, build_time: float, rng: random.Random) -> str:
    root = tree.root(n)
    indices = iter([rng.randrange(n) for _ in range(200)] * 2)
    olds = iter([rng.randrange(1, n) for _ in range(200)] * 2)
    gen_inc = _time_us(lambda: merkle.inclusion_proof(tree, next(indices), n), 200)
    gen_con = _time_us(lambda: merkle.consistency_proof(tree, next(olds), n), 200)
    i, old = rng.randrange(n), rng.randrange(1, n)
    proof, leaf = merkle.inclusion_proof(tree, i, n), tree.node(0, i)
    cproof, old_root = merkle.consistency_proof(tree, old, n), tree.root(old)
    ver_inc = _time_us(lambda: merkle.verify_inclusion(i, n, leaf, proof, root), 200)
    ver_con = _time_us(lambda: merkle.verify_consistency(old, n, old_root, root, cproof), 200)
    return (f"| {n:>9,} | {build_time:6.2f} s | {gen_inc:9.1f} | {ver_inc:9.1f} "
            f"| {gen_con:9.1f} | {ver_con:9.1f} |")


def _proof_rows(max_size: int) -> list[str]:
    rows = []
    rng = random.Random(1)
    tree = merkle.MerkleTree()
    build_time = 0.0
    for n in (n for n in (10**3, 10**5, 10**6) if n <= max_size):
        t = time.perf_counter()
        for i in range(tree.size, n):
            tree.append(i.to_bytes(8, "big"))
        build_time += time.perf_counter() - t
        rows.append(_proof_row(tree, n, build_time, rng))
    return rows


def _fsync_ms(samples: int = 50) -> float:
    with tempfile.NamedTemporaryFile() as f:
        times = []
        for _ in range(samples):
            f.write(b"x" * 512)
            f.flush()
            t = time.perf_counter()
            os.fsync(f.fileno())
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-size", type=int, default=10**6)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    print("Append throughput (durable: each batch = one write of its entry records and its signed")
    print(f"checkpoint record + one fsync; {args.seconds:g} s per row; HTTP: server in its own")
    print("process, writers in the bench process, same 2 cores; every add a distinct entry but")
    print("in 'same entry again', where the log answers with the existing index, appending")
    print("nothing)\n")
    print("| path               | writers | entries/s | entries | batches | entries/batch |")
    print("|--------------------|--------:|----------:|--------:|--------:|--------------:|")
    rows: tuple[tuple[str, Callable[[int, float], Any], tuple[int, ...]], ...] = (
        ("storage+batcher", _storage_writers, (1, 8, 64, 256)),
        ("  same entry again", partial(_storage_writers, repeat=True), (64,)),
        ("HTTP POST /add", _http_writers, (1, 8, 64)))
    for label, fn, counts in rows:
        for writers in counts:
            rate, done, batches = asyncio.run(fn(writers, args.seconds))
            per = done / batches if batches else 0.0
            print(f"| {label:<18} | {writers:>7} | {rate:>9,.0f} | {done:>7,} | {batches:>7,} "
                  f"| {per:>13.1f} |")

    print(f"\nfsync latency of this disk meanwhile: median {_fsync_ms():.2f} ms (a batch is "
          "bounded by writers / fsync latency)")
    print("\nProofs (median microseconds; SHA-256 RFC 9162 tree, all node levels in memory)\n")
    print("| entries   | build     | incl. gen | incl. ver | cons. gen | cons. ver |")
    print("|-----------|-----------|----------:|----------:|----------:|----------:|")
    for row in _proof_rows(args.max_size):
        print(row)


if __name__ == "__main__":
    main()
