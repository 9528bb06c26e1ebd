"""node.hygiene: the memory-hygiene environment and the re-exec into it (issue 9 item 3b).

Whether the environment does its job is tested from outside a running engine in
tests/node/engine/test_process_memory.py; here: the mapping is right, other settings survive,
and `reexec_with_memory_hygiene` re-runs the same command line exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys

from node.hygiene import has_memory_hygiene, hygienic_environment

CHILD = """
import os, sys
from node.hygiene import reexec_with_memory_hygiene
print("start", os.getpid(), flush=True)
reexec_with_memory_hygiene()
print("running", os.environ["GLIBC_TUNABLES"], os.environ["PYTHONMALLOC"], sys.argv[1:])
"""


def test_environment_adds_the_settings_and_keeps_everything_else() -> None:
    env = hygienic_environment({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:"
                                "glibc.malloc.perturb=0", "PYTHONMALLOC": "pymalloc"})
    assert env["PATH"] == "/bin"
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["MKL_DISABLE_FAST_MM"] == "1"
    tunables = dict(t.split("=") for t in env["GLIBC_TUNABLES"].split(":"))
    assert tunables == {"glibc.malloc.arena_max": "2", "glibc.malloc.perturb": "165",
                        "glibc.malloc.tcache_count": "0"}
    assert has_memory_hygiene(env)
    assert hygienic_environment(env) == env


def test_partial_settings_are_not_hygiene() -> None:
    full = hygienic_environment({})
    for name in ("GLIBC_TUNABLES", "PYTHONMALLOC", "MKL_DISABLE_FAST_MM"):
        assert not has_memory_hygiene({k: v for k, v in full.items() if k != name})
    assert not has_memory_hygiene(full | {"GLIBC_TUNABLES": "glibc.malloc.perturb=165"})
    assert not has_memory_hygiene(full | {"GLIBC_TUNABLES": "glibc.malloc.perturb=0:"
                                          "glibc.malloc.tcache_count=0"})


def run_child(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, "node", "serve"], env=env, capture_output=True,
        text=True, timeout=60, check=True)
    return out.stdout.splitlines()


def test_reexec_runs_the_same_command_line_once_under_hygiene() -> None:
    base = {k: v for k, v in os.environ.items()
            if k not in {"GLIBC_TUNABLES", "PYTHONMALLOC", "MKL_DISABLE_FAST_MM"}}
    lines = run_child(base)
    starts = [ln for ln in lines if ln.startswith("start")]
    assert len(starts) == 2  # the first run, then the re-executed one ...
    assert len({s.split()[1] for s in starts}) == 1  # ... in place (same process id)
    assert lines[-1] == ("running glibc.malloc.perturb=165:glibc.malloc.tcache_count=0 malloc "
                         "['node', 'serve']")


def test_reexec_returns_at_once_when_already_under_hygiene() -> None:  # positive twin
    lines = run_child(hygienic_environment(os.environ))
    assert [ln.split()[0] for ln in lines] == ["start", "running"]
