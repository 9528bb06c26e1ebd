"""node.hygiene: the memory-hygiene environment and the re-exec into it (issue 9 item 3b).

Whether the environment does its job is tested from outside: freed blocks of every kind in
tests/node/test_freed_memory.py, a running engine's request data in
tests/node/engine/test_process_memory.py. Here: the mapping is right for both ways, other
settings survive, `reexec_with_memory_hygiene` re-runs the same command line exactly once, and a
library named but not in effect stops the process instead of running it unprotected.
"""

from __future__ import annotations

import os
import subprocess
import sys

from node.hygiene import LIBRARY, has_memory_hygiene, hygienic_environment, requested_mode

CHILD = """
import os, sys
from node.hygiene import reexec_with_memory_hygiene
print("start", os.getpid(), flush=True)
mode = reexec_with_memory_hygiene()
print("running", mode, os.environ["PYTHONMALLOC"], sys.argv[1:])
"""
SETTINGS = {"LD_PRELOAD", "GLIBC_TUNABLES", "PYTHONMALLOC", "MKL_DISABLE_FAST_MM"}


def test_the_library_is_built() -> None:  # `make setup` builds it; without it nothing below
    assert LIBRARY.is_file()                # would test the erase-on-free way


def test_erase_on_free_environment_preloads_the_library_first_and_keeps_the_rest() -> None:
    env = hygienic_environment({"PATH": "/bin", "LD_PRELOAD": "/opt/a.so:/opt/b.so",
                                "GLIBC_TUNABLES": "glibc.malloc.arena_max=2",
                                "PYTHONMALLOC": "pymalloc"})
    assert env["PATH"] == "/bin"
    assert env["LD_PRELOAD"] == f"{LIBRARY} /opt/a.so /opt/b.so"
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"  # no perturb: tcache stays on
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["MKL_DISABLE_FAST_MM"] == "1"
    assert requested_mode(env) == "erase_on_free"
    assert hygienic_environment(env) == env


def test_glibc_perturb_environment_where_the_library_is_not_built() -> None:
    env = hygienic_environment({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:"
                                "glibc.malloc.perturb=0", "PYTHONMALLOC": "pymalloc"},
                               library=LIBRARY.with_name("not-built.so"))
    assert env["PATH"] == "/bin"
    assert "LD_PRELOAD" not in env
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["MKL_DISABLE_FAST_MM"] == "1"
    tunables = dict(t.split("=") for t in env["GLIBC_TUNABLES"].split(":"))
    assert tunables == {"glibc.malloc.arena_max": "2", "glibc.malloc.perturb": "165",
                        "glibc.malloc.tcache_count": "0"}
    assert requested_mode(env) == "glibc_perturb"
    assert hygienic_environment(env, None) == env


def test_partial_settings_are_not_hygiene() -> None:
    for full in (hygienic_environment({}), hygienic_environment({}, None)):
        assert has_memory_hygiene(full)  # twin
        for name in SETTINGS & set(full):
            assert not has_memory_hygiene({k: v for k, v in full.items() if k != name})
    perturb = hygienic_environment({}, None)
    assert not has_memory_hygiene(perturb | {"GLIBC_TUNABLES": "glibc.malloc.perturb=165"})
    assert not has_memory_hygiene(perturb | {"GLIBC_TUNABLES": "glibc.malloc.perturb=0:"
                                             "glibc.malloc.tcache_count=0"})
    preload = hygienic_environment({})
    assert not has_memory_hygiene(preload | {"LD_PRELOAD": f"/opt/a.so {LIBRARY}"})  # not first


def run_child(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, "node", "serve"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_reexec_runs_the_same_command_line_once_under_hygiene() -> None:
    done = run_child({k: v for k, v in os.environ.items() if k not in SETTINGS})
    lines = done.stdout.splitlines()
    starts = [ln for ln in lines if ln.startswith("start")]
    assert len(starts) == 2  # the first run, then the re-executed one ...
    assert len({s.split()[1] for s in starts}) == 1  # ... in place (same process id)
    assert lines[-1] == "running erase_on_free malloc ['node', 'serve']"


def test_reexec_returns_at_once_when_already_under_hygiene() -> None:  # positive twin
    for env, mode in ((hygienic_environment(os.environ), "erase_on_free"),
                      (hygienic_environment(os.environ, None), "glibc_perturb")):
        lines = run_child(env).stdout.splitlines()
        assert [ln.split()[:2] for ln in lines][1:] == [["running", mode]]
        assert len(lines) == 2


def test_a_library_named_but_not_loaded_stops_the_process() -> None:
    missing = LIBRARY.parent / "gone" / LIBRARY.name  # the right name, nothing there
    env = hygienic_environment(os.environ) | {"LD_PRELOAD": str(missing)}
    done = run_child(env)
    assert done.returncode != 0
    assert "MemoryHygieneError" in done.stderr
    assert "running" not in done.stdout
    assert "erase-on-free library named in LD_PRELOAD is not in effect" in done.stderr
