"""Process memory hygiene for the node: freed heap memory is overwritten at once.

The KV pool and the runner's reused buffers are zeroed when a request ends (and when the engine
goes idle), but every temporary a step allocates -- activations, K/V before they reach the pool,
index tensors, Python `str`/`bytes` of prompts and outputs -- goes back to the allocator when it
is freed, and glibc keeps freed chunks as they were. An outsider reading the process's memory
(a core dump, /proc/PID/mem, a later exploit) would find request data there long after the
request ended. Under this environment it does not. Two ways, the first wherever it is built:

* `erase_on_free` (`LD_PRELOAD` of `node/native/liberase_on_free.so`, built by `make setup` from
  `erase_on_free.c`): `free` zeroes a block's whole usable size before glibc takes it back, and
  `realloc` never lets glibc move or shrink a block without zeroing what it leaves. glibc's
  per-thread cache and fast paths stay on.
* `glibc_perturb`, where the library is not built (a node started from the image, which carries
  no compiled code): `GLIBC_TUNABLES=glibc.malloc.perturb=<byte>` fills every chunk glibc frees
  (and every chunk it hands out), with `glibc.malloc.tcache_count=0`, because chunks put in the
  per-thread cache skip the fill. Complete too, and slower: every allocation takes glibc's slow
  path, and the node's event loop (CPython objects) with it.

Both add:

* `PYTHONMALLOC=malloc`: CPython's small-object allocator (pymalloc keeps freed blocks as they
  were) is replaced by the C library's, so freed Python objects are overwritten too.
* `MKL_DISABLE_FAST_MM=1`: Intel MKL (torch's CPU BLAS) otherwise keeps its per-thread GEMM
  packing buffers for reuse; they held the last matrices multiplied (attention V rows of a
  request, seen by the process-memory test). With it MKL frees them after each call.

These variables are read once, when the process starts, so they cannot be set from inside a
running interpreter: `reexec_with_memory_hygiene` replaces the process with a fresh interpreter
running the same command line under them. The node's entry point calls it before heavy imports.
Memory glibc returns to the kernel (unmapped chunks) is zeroed by the kernel before reuse.
Both ways need glibc (the library calls glibc's own `__libc_malloc` family; musl reads no
GLIBC_TUNABLES), and neither applies to set-uid programs.

Invariants:
* `hygienic_environment` returns a new mapping (it only looks whether the library is built),
  keeping every other variable, any other glibc tunable and any other preloaded library, and
  overriding these settings.
* `reexec_with_memory_hygiene` returns only when the current process runs under the hygiene,
  checked in the running process for `erase_on_free` (the dynamic linker skips a preload it
  cannot load with a warning; the node then refuses to start instead).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Mode = Literal["erase_on_free", "glibc_perturb"]
LIBRARY = Path(__file__).parent / "native" / "liberase_on_free.so"
MARKER = "hushcc_erase_on_free_abi"  # a symbol only the library defines
PERTURB_BYTE = 0xA5  # any non-zero byte; 0 would turn the fill off
TUNABLES = {"glibc.malloc.perturb": str(PERTURB_BYTE), "glibc.malloc.tcache_count": "0"}
OTHER_SETTINGS = {"PYTHONMALLOC": "malloc", "MKL_DISABLE_FAST_MM": "1"}


class MemoryHygieneError(ConfigError):
    """The environment asks for the hygiene but the running process is not under it."""


def _tunables(value: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in value.split(":") if item)
    return {name: val for name, _, val in pairs}


def _preloads(value: str) -> list[str]:
    return value.replace(":", " ").split()  # ld.so separates LD_PRELOAD by spaces or colons


def hygienic_environment(environ: Mapping[str, str],
                         library: Path | None = LIBRARY) -> dict[str, str]:
    """`environ` with the memory-hygiene settings added (other settings kept).

    Args:
        environ: the current environment.
        library: the erase-on-free library to preload (first, so that its `free` is the one
            called); None for `glibc_perturb`. The default is the built library; where it is
            not built, `glibc_perturb` is used.

    Returns:
        A new environment mapping.
    """
    env = dict(environ) | OTHER_SETTINGS
    if library is not None and library.is_file():
        others = [p for p in _preloads(env.get("LD_PRELOAD", "")) if p != str(library)]
        env["LD_PRELOAD"] = " ".join([str(library), *others])
    else:
        tunables = _tunables(env.get("GLIBC_TUNABLES", "")) | TUNABLES
        env["GLIBC_TUNABLES"] = ":".join(f"{k}={v}" for k, v in tunables.items())
    return env


def requested_mode(environ: Mapping[str, str]) -> Mode | None:
    """The hygiene `environ` asks for, or None when it lacks a setting."""
    if any(environ.get(k) != v for k, v in OTHER_SETTINGS.items()):
        return None
    first = next(iter(_preloads(environ.get("LD_PRELOAD", ""))), "")
    if Path(first).name == LIBRARY.name:
        return "erase_on_free"
    tunables = _tunables(environ.get("GLIBC_TUNABLES", ""))
    if all(tunables.get(k) == v for k, v in TUNABLES.items()):
        return "glibc_perturb"
    return None


def has_memory_hygiene(environ: Mapping[str, str]) -> bool:
    """True when `environ` already carries every setting of one of the two ways."""
    return requested_mode(environ) is not None


def erase_on_free_in_effect(environ: Mapping[str, str]) -> bool:
    """True when this process's `free` is that of the library `environ` preloads first."""
    process = ctypes.CDLL(None)
    preloads = _preloads(environ.get("LD_PRELOAD", ""))
    if not preloads or not hasattr(process, MARKER):
        return False
    library = ctypes.CDLL(preloads[0])  # already loaded: the same handle
    address = ctypes.c_void_p
    return ctypes.cast(process.free, address).value == ctypes.cast(library.free, address).value


def reexec_with_memory_hygiene(argv: Sequence[str] | None = None) -> Mode:
    """Re-run this interpreter's command line under memory hygiene, unless already under it.

    Returns at once when the process already runs under it; otherwise never returns. Call it
    first thing in a process that will hold request data (`hushcc node serve`), before heavy
    imports: everything done before the exec is lost, and the new process starts from the
    beginning with the same arguments (`sys.orig_argv`: interpreter options, `-m app` or the
    script, then the command's own arguments).

    Args:
        argv: the full command line to run again (default `sys.orig_argv`).

    Returns:
        The way the process's memory is kept.

    Raises:
        MemoryHygieneError: the environment names the library but it is not in effect.
    """
    mode = requested_mode(os.environ)
    if mode is None:
        _exec(list(argv if argv is not None else sys.orig_argv),
              hygienic_environment(os.environ))
    if mode == "erase_on_free" and not erase_on_free_in_effect(os.environ):
        raise MemoryHygieneError(
            "memory hygiene: the erase-on-free library named in LD_PRELOAD is not in effect "
            "(not found or not loadable; `make setup` builds it)")
    return mode


def _exec(argv: list[str], env: dict[str, str]) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - the same interpreter, same arguments
