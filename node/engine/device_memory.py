"""No residue in the CUDA caching allocator: zero the memory it holds free once the engine idles.

PyTorch's caching allocator keeps device memory freed by a step (activations, gathered K/V,
logits) for reuse without clearing it, so a later `torch.empty` would read the last request's
data. `scrub_free_memory` takes every free block the allocator caches (`hold_free_blocks`:
one `torch.empty` per inactive block, largest first and on the block's own stream, so best
fit hands back exactly that block), zero-fills them and frees them again; freed neighbours
coalesce, and the next round takes the merged blocks, until a round holds every free byte of
the allocator's own pool.

Invariants:
* Only memory the allocator holds free is written; live tensors (the KV pool, weights, the
  decode graphs' buffers) are never touched. Blocks of the graphs' private pools are not
  reachable here: `graphs.DecodeGraphs.scrub` overwrites them by replaying on neutral inputs.
* Off CUDA this is a no-op (host memory hygiene is `node/hygiene.py`'s).
"""

from __future__ import annotations

import torch

MAX_ROUNDS = 4


def free_blocks(device: torch.device) -> list[tuple[int, int]]:
    """(stream, size) of the inactive blocks of the allocator's default pool, largest first.

    The allocator keeps free blocks per stream (e.g. the graphs' warm-up stream): a block is
    handed back only to an allocation on its own stream.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    found = [
        (int(seg["stream"]), int(block["size"]))
        for seg in torch.cuda.memory_snapshot()  # type: ignore[no-untyped-call]
        if seg["device"] == index and tuple(seg.get("segment_pool_id", (0, 0))) == (0, 0)
        for block in seg["blocks"]
        if block["state"] == "inactive"
    ]
    return sorted(found, key=lambda sb: -sb[1])


def hold_free_blocks(device: torch.device) -> list[torch.Tensor]:
    """Allocate every free cached block as a `uint8` tensor (contents as left by its last user)."""
    held = []
    current = torch.cuda.current_stream(device)
    for stream, size in free_blocks(device):
        if stream == current.cuda_stream:
            held.append(torch.empty(size, dtype=torch.uint8, device=device))
            continue
        other = torch.cuda.ExternalStream(stream, device=device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(other):
            held.append(torch.empty(size, dtype=torch.uint8, device=device))
    return held


def scrub_free_memory(device: torch.device) -> int:
    """Zero every byte the caching allocator holds free on `device`; returns the bytes zeroed."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    zeroed = 0
    for _ in range(MAX_ROUNDS):
        held = hold_free_blocks(device)
        for t in held:
            t.zero_()
        zeroed += sum(t.numel() for t in held)
        done = not free_blocks(device)  # while held: nothing free was left out
        torch.cuda.synchronize(device)  # the zeroing done before the blocks go back
        del held
        if done:
            break
    torch.cuda.synchronize(device)
    return zeroed
