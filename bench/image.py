"""Benchmark `hushcc image build`: build time per step and image size, cold vs warm.

    PYTHONPATH=. python bench/image.py [--model PATH] [--wheels DIR] [--deps full|none] [--runs N]
        [--cache DIR] [--compare-compressors]

* The dependency set is the project's runtime closure (hushcc's requirements, walked through the
  installed distributions with their markers), pinned to the versions installed in this venv.
  Their wheels are gathered into `--wheels` (default ~/.cache/hushcc-bench/wheels) with
  `pip download --no-deps --only-binary :all:` (pip's own index and cache; torch's CPU wheel
  from the configured find-links); `--deps none` builds without a dependency set.
* Run 1 is "cold": the wheel directory is filled first (timed separately) and the build cache
  (`--cache`, default a fresh temporary directory) is empty, so the GGUF model is converted to
  safetensors. Later runs are "warm": the wheels are local and the model's conversion comes from
  the cache (checked by hashing). Every run builds the whole image, and every run's image,
  hash tree and manifest must be byte-identical to the cold one (B1, warm vs cold).
* Goal (issue 14): a full build under 3 minutes on the 2-core box, a warm rebuild under 1.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement

# This script's folder is sys.path[0]; its own name must not shadow the `image` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from attestation.measure import source_root  # noqa: E402
from image import manifest, tools  # noqa: E402
from image.build import BuildInputs, build, stage  # noqa: E402
from image.cache import Cache  # noqa: E402
from image.content import PACKAGES  # noqa: E402
from image.deps import lock_from_wheels  # noqa: E402
from image.model import default_model  # noqa: E402

EPOCH = 1767225600


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (pip, mksquashfs, ...)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Timer:
    """A build progress sink that records when each step starts (wall clock and CPU)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []

    def step(self, name: str, total: int | None) -> None:
        del total
        self.marks.append((name, time.perf_counter(), cpu_seconds()))

    def advance(self, amount: int) -> None:
        del amount

    def durations(self) -> dict[str, tuple[float, float]]:
        """Per step: (wall seconds, CPU seconds)."""
        out = {}
        ends = [*self.marks[1:], ("", time.perf_counter(), cpu_seconds())]
        for (name, wall, cpu), (_, wall_end, cpu_end) in zip(self.marks, ends, strict=True):
            out[name] = (wall_end - wall, cpu_end - cpu)
        return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_pins() -> dict[str, str]:
    """The installed versions of hushcc's runtime requirement closure."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env["extra"] = ""
    todo = list(md.requires("hushcc") or [])
    pins: dict[str, str] = {}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _norm(req.name)
        if name in pins:
            continue
        dist = md.distribution(req.name)
        pins[name] = dist.version
        todo.extend(dist.requires or [])
    return dict(sorted(pins.items()))


def fetch_wheels(pins: dict[str, str], wheels: Path) -> float:
    """Fill `wheels` with one wheel per pin; return the seconds it took."""
    wheels.mkdir(parents=True, exist_ok=True)
    have = {_norm(p.name.split("-")[0]) for p in wheels.glob("*.whl")}
    missing = [f"{n}=={v}" for n, v in pins.items() if n not in have]
    start = time.perf_counter()
    if missing:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                "--quiet", "-d", str(wheels), *missing]
        subprocess.run(argv, check=True)  # noqa: S603 - our interpreter, pinned names
    return time.perf_counter() - start


def snapshot_source(dest: Path) -> Path:
    """A copy of this checkout's packages, so edits made while the bench runs do not count."""
    for package in PACKAGES:
        if (source_root() / package).is_dir():
            shutil.copytree(source_root() / package, dest / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
    return dest


BuildRow = tuple[dict[str, tuple[float, float]], float, int, int, str, str]


def one_build(inputs: BuildInputs, cache: Cache) -> BuildRow:
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="hushcc-bench-") as tmp:
        start = time.perf_counter()
        doc = build(inputs, Path(tmp) / "out", timer, cache)
        total = time.perf_counter() - start
        steps = timer.durations()
        out = Path(tmp) / "out"
        tree = (out / "rootfs.verity").stat().st_size
        text = (out / "manifest.json").read_text()
        digest = hashlib.sha256(text.encode() + (out / "rootfs.verity").read_bytes()).hexdigest()
    return steps, total, int(doc["image"]["size"]) + tree, len(doc["files"]), digest, text


COMPRESSORS = {
    "gzip -9 (before)": ["-comp", "gzip", "-Xcompression-level", "9"],
    f"zstd -{tools.ZSTD_LEVEL} (now)": ["-comp", "zstd", "-Xcompression-level",
                                       str(tools.ZSTD_LEVEL)],
}


def compare_compressors(inputs: BuildInputs, cache: Cache) -> None:
    """mksquashfs over the same staged tree with the old and the new compressor, side by side."""
    with tempfile.TemporaryDirectory(prefix="hushcc-bench-comp-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        stage(inputs, root, Timer(), cache)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(f"\nmksquashfs on the staged tree ({size / 2**20:.0f} MiB)")
        print(f"{'compressor':<22}{'wall s':>10}{'CPU s':>10}{'MiB':>10}")
        for label, options in COMPRESSORS.items():
            out = Path(tmp) / "out.squashfs"
            wall, cpu = time.perf_counter(), cpu_seconds()
            subprocess.run([tools.find_tool("mksquashfs"), str(root), str(out), "-noappend",  # noqa: S603
                            "-reproducible", "-all-root", "-no-xattrs", "-quiet", "-no-progress",
                            *options], check=True)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            print(f"{label:<22}{wall:>10.1f}{cpu:>10.1f}{out.stat().st_size / 2**20:>10.1f}")
            out.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file or safetensors dir (default SmolLM2)")
    parser.add_argument("--wheels", type=Path,
                        default=Path.home() / ".cache" / "hushcc-bench" / "wheels")
    parser.add_argument("--deps", choices=("full", "none"), default="full")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="build cache (default: a fresh temporary one)")
    parser.add_argument("--compare-compressors", action="store_true",
                        help="also time mksquashfs with gzip -9 (the old setting) and zstd")
    args = parser.parse_args()
    model = args.model or default_model()
    lock = wheels = None
    fetch = 0.0
    if args.deps == "full":
        pins = runtime_pins()
        fetch = fetch_wheels(pins, args.wheels)
        wheels = args.wheels
        lock_text = "".join(line for line in lock_from_wheels(wheels).splitlines(keepends=True)
                            if line.split("==")[0] in pins)
        lock = Path(tempfile.mkdtemp(prefix="hushcc-bench-lock-")) / "requirements.lock"
        lock.write_text(lock_text)
        print(f"dependency set: {len(pins)} wheels pinned; "
              f"fetching missing ones took {fetch:.1f} s")
    source = snapshot_source(Path(tempfile.mkdtemp(prefix="hushcc-bench-src-")) / "src")
    inputs = BuildInputs(source, model, EPOCH, lock, wheels)
    cache = Cache(args.cache or Path(tempfile.mkdtemp(prefix="hushcc-bench-cache-")))
    rows = []
    manifests: list[dict[str, Any]] = []
    for run in range(args.runs):
        steps, total, size, files, digest, text = one_build(inputs, cache)
        rows.append(("cold" if run == 0 else "warm", steps, total, size, files, digest))
        manifests.append(manifest.loads(text.encode()))
    names = list(rows[0][1])
    print(f"\nimage build, model {model.name}, deps {args.deps} "
          "(seconds per step: wall clock / CPU of the build and its tools)")
    header = f"{'step':<38}" + "".join(f"{label + ' ' + str(i + 1):>18}"
                                        for i, (label, *_rest) in enumerate(rows))
    print(header)
    print("-" * len(header))
    for name in names:
        print(f"{name:<38}" + "".join(
            f"{r[1].get(name, (0.0, 0.0))[0]:>11.1f} /{r[1].get(name, (0.0, 0.0))[1]:>5.1f}"
            for r in rows))
    print(f"{'total build (wall / CPU)':<38}" + "".join(
        f"{r[2]:>11.1f} /{sum(c for _, c in r[1].values()):>5.1f}" for r in rows))
    print(f"{'image + hash tree (MiB)':<38}" + "".join(f"{r[3] / 2**20:>18.1f}" for r in rows))
    print(f"{'files':<38}" + "".join(f"{r[4]:>18}" for r in rows))
    print(f"{'identical to run 1 (manifest, tree)':<38}"
          + "".join(f"{'yes' if r[5] == rows[0][5] else 'NO':>18}" for r in rows))
    print(f"load average (1/5/15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("goal: full build < 180 s, warm rebuild < 60 s (issue 14)")
    if args.compare_compressors:
        compare_compressors(inputs, cache)
    for doc in manifests[1:]:
        difference = manifest.first_difference(manifests[0], doc)
        if difference is not None:
            raise SystemExit(f"a warm build differs from the cold one (B1): {difference}")


if __name__ == "__main__":
    main()
