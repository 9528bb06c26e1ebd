"""The child process of `test_process_memory`: a tiny engine serving a canary request.

It stops twice for the parent to read its memory from outside (/proc/PID/mem): once inside the
canary's first forward (the request is live: its K/V are in the pool, its token ids in the
runner's buffers), once after the canary ended, other tenants' requests ran and the engine went
idle. Each stop prints one word and waits for "go" on stdin.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import torch

from tests.node.engine.engine_helpers import SALT_A, SALT_B, collect, make_engine, req

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.batch import ForwardChunk

CANARY = tuple(range(300, 324))  # token ids no other prompt here uses; one 24-token prefill
OTHERS = [[(7 * k + 3 * i) % 290 + 3 for i in range(10 + 6 * k)] for k in range(4)]


def stop(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(1)


async def main() -> None:
    eng = make_engine(cache=False)
    forward, calls = eng.runner.forward, [0]

    def pausing(chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        out = forward(chunks)
        calls[0] += 1
        if calls[0] == 1:
            stop("live")
        return out

    eng.runner.forward = pausing  # type: ignore[method-assign]
    await collect(eng.submit(req(CANARY, max_tokens=6), SALT_A))
    await asyncio.gather(*(collect(eng.submit(req(p, max_tokens=6), SALT_B)) for p in OTHERS))
    while not eng.idle:  # noqa: ASYNC110 - polls the engine from outside, like a metrics reader
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the step loop has found no work (and zeroed the runner's buffers)
    stop("ended")
    await eng.close()


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]))
    asyncio.run(main())
