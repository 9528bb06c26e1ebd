"""A fake KV pool of Python lists for scheduler-level tests (no model, no torch).

Each slot holds `(tenant_root, token_id)` once written, or 0 when zero; `write` plays the runner's
part of a step (KV of every fed token lands in its slot), `zero_blocks` the runner's erasure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.engine.scheduler import StepPlan

Slot = tuple[bytes, int] | int


class FakePool:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.slots: list[list[Slot]] = [[0] * block_size for _ in range(num_blocks)]
        self.zero_calls = 0

    def zero_blocks(self, block_ids: Sequence[int]) -> None:
        self.zero_calls += 1
        for b in block_ids:
            self.slots[b] = [0] * self.block_size

    def is_zero(self, block: int) -> bool:
        return all(s == 0 for s in self.slots[block])

    def write(self, plan: StepPlan) -> None:
        for share in plan.scheduled:
            if share.chunk is None:
                continue
            c = share.chunk
            for i, tok in enumerate(c.token_ids):
                p = c.start_pos + i
                self.slots[c.block_table[p // self.block_size]][p % self.block_size] = (
                    share.seq.root, tok)


class ToyTokenizer:
    """Decodes token i to the word `w<i> ` (enough for streaming and stop-string tests)."""

    def decode(self, token_ids: list[int], **kwargs: object) -> str:
        return "".join(f"w{i} " for i in token_ids)


def _children(o: object) -> list[object]:
    import asyncio  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415

    if isinstance(o, dict):
        return [*o.keys(), *o.values()]
    if isinstance(o, (list, tuple, set, frozenset)) or type(o).__name__ == "deque":
        return list(o)  # type: ignore[call-overload,no-any-return]
    if isinstance(o, asyncio.Queue):
        return list(o._queue)  # type: ignore[attr-defined]
    out: list[object] = []
    if dataclasses.is_dataclass(o):
        out.extend(getattr(o, f.name) for f in dataclasses.fields(o))
    out.extend(getattr(o, s) for s in getattr(type(o), "__slots__", ()) if hasattr(o, s))
    if hasattr(o, "__dict__"):
        out.extend(vars(o).values())
    return out


def walk_ints(obj: object, skip: tuple[type, ...] = ()) -> list[int]:
    """Every int reachable from `obj` through containers, dataclasses, __dict__ and __slots__.

    Objects of the `skip` types (the runner, checked through its own `kv_pool_is_zero`; the
    tokenizer) are not entered.
    """
    import enum  # noqa: PLC0415

    seen: set[int] = set()
    out: list[int] = []
    stack = [obj]
    while stack:
        o = stack.pop()
        if o is None or isinstance(o, (bool, str, bytes, float, enum.Enum)):
            continue
        if isinstance(o, int):
            out.append(o)
        elif id(o) not in seen and not isinstance(o, skip):
            seen.add(id(o))
            stack.extend(_children(o))
    return out
