"""Where the benchmarks' processes run under `--pin` (`bench/node.py`, `bench/e2e.py`).

The engines get the first CPU of this process's affinity, with one math thread; everything else
(clients, relay, log, issuer) gets the others: the node as on hardware of its own, apart from
its clients, which a 2-core machine cannot otherwise show (there the clients' wake-ups stall the
engine's second thread at its barriers).
"""

from __future__ import annotations

import os
from pathlib import Path

ENGINE_THREADS = {"OMP_NUM_THREADS": "1"}  # an engine process's environment under --pin


def split_cpus() -> tuple[set[int], set[int]]:
    """(the engines' CPU, the other CPUs) of this process's affinity; at least two needed."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:  # one CPU for the engines, at least one for the rest
        raise SystemExit("--pin needs at least two CPUs")
    return {cpus[0]}, set(cpus[1:])


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)
