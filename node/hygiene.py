"""Process memory hygiene for the node: freed heap memory is overwritten at once.

The KV pool and the runner's reused buffers are zeroed when a request ends (and when the engine
goes idle), but every temporary a step allocates -- activations, K/V before they reach the pool,
index tensors, Python `str`/`bytes` of prompts and outputs -- goes back to the allocator when it
is freed, and glibc keeps freed chunks as they were. An outsider reading the process's memory
(a core dump, /proc/PID/mem, a later exploit) would find request data there long after the
request ended. Under this environment it does not:

* `GLIBC_TUNABLES=glibc.malloc.perturb=<byte>`: glibc fills every chunk it frees with the byte.
* `glibc.malloc.tcache_count=0`: no per-thread cache (chunks put in the tcache skip the fill).
* `PYTHONMALLOC=malloc`: CPython's small-object allocator (pymalloc keeps freed blocks as they
  were) is replaced by glibc's, so freed Python objects are overwritten too.
* `MKL_DISABLE_FAST_MM=1`: Intel MKL (torch's CPU BLAS) otherwise keeps its per-thread GEMM
  packing buffers for reuse; they held the last matrices multiplied (attention V rows of a
  request, seen by the process-memory test). With it MKL frees them after each call, to glibc.

These variables are read once, when the process starts, so they cannot be set from inside a
running interpreter: `reexec_with_memory_hygiene` replaces the process with a fresh interpreter
running the same command line under them. The node's entry point calls it before heavy imports.
Chunks above glibc's mmap threshold are returned to the kernel on free (unmapped; the kernel
zeroes pages before reusing them). GLIBC_TUNABLES needs glibc >= 2.26 and is ignored for
set-uid programs; other C libraries (musl) do not read it.

Invariants:
* `hygienic_environment` is pure: it returns a new mapping, keeping every other variable and any
  other glibc tunable, and overriding these settings.
* `reexec_with_memory_hygiene` returns only when the current process already runs under it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PERTURB_BYTE = 0xA5  # any non-zero byte; 0 would turn the fill off
TUNABLES = {"glibc.malloc.perturb": str(PERTURB_BYTE), "glibc.malloc.tcache_count": "0"}
OTHER_SETTINGS = {"PYTHONMALLOC": "malloc", "MKL_DISABLE_FAST_MM": "1"}


def _tunables(value: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in value.split(":") if item)
    return {name: val for name, _, val in pairs}


def hygienic_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the memory-hygiene settings added (other glibc tunables kept).

    Args:
        environ: the current environment.

    Returns:
        A new environment mapping.
    """
    env = dict(environ)
    tunables = _tunables(env.get("GLIBC_TUNABLES", "")) | TUNABLES
    env["GLIBC_TUNABLES"] = ":".join(f"{k}={v}" for k, v in tunables.items())
    return env | OTHER_SETTINGS


def has_memory_hygiene(environ: Mapping[str, str]) -> bool:
    """True when `environ` already carries every memory-hygiene setting."""
    tunables = _tunables(environ.get("GLIBC_TUNABLES", ""))
    return all(environ.get(k) == v for k, v in OTHER_SETTINGS.items()) and all(
        tunables.get(k) == v for k, v in TUNABLES.items())


def reexec_with_memory_hygiene(argv: Sequence[str] | None = None) -> None:
    """Re-run this interpreter's command line under memory hygiene, unless already under it.

    Returns at once when the environment already carries the settings; otherwise never returns.
    Call it first thing in a process that will hold request data (`hushcc node serve`), before
    heavy imports: everything done before the exec is lost, and the new process starts from the
    beginning with the same arguments (`sys.orig_argv`: interpreter options, `-m app` or the
    script, then the command's own arguments).

    Args:
        argv: the full command line to run again (default `sys.orig_argv`).
    """
    if has_memory_hygiene(os.environ):
        return
    _exec(list(argv if argv is not None else sys.orig_argv),
          hygienic_environment(os.environ))


def _exec(argv: list[str], env: dict[str, str]) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - the same interpreter, same arguments
