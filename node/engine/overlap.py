"""What of an engine step must happen before the next step's forward is launched.

Pure (no torch, no asyncio): the engine (`engine.py`) follows this order, and `settle` is the
token-level bookkeeping of one share, the part of a step the next plan depends on.

One step n, in this order (the engine's `step`):

=========  ==========================================================================  ==========
phase      what                                                                        needs
=========  ==========================================================================  ==========
LAND       await the worker thread's forward n, then its ONE batched sampling call       --
           and ONE host transfer of the ids (`sampler.run_and_pick`)
HEAD       per share: `settle` (accept drafts, cut at max_tokens and EOS), append       ids of n
           the tokens (`scheduler.complete`), end EOS / max_tokens sequences in the
           scheduler (their blocks are not planned again), plan prompt-lookup drafts;
           then apply cancellations and zero every freed block (`flush`)
LAUNCH     with overlap: `schedule` step n+1 and start forward n+1                       HEAD of n
TAIL       per share: detokenise, stop strings, text deltas, final deltas, stats        HEAD of n
           (runs while forward n+1 computes)
=========  ==========================================================================  ==========

Without overlap the same phases run, and LAUNCH happens at the start of the next `step` call,
after TAIL. The decode inputs of n+1 (the last token, the drafts, the block tables) and every
scheduling decision (who ended, who is cancelled, which blocks are free) come from HEAD only, so
both orders plan the same chunks for every live sequence, except for the rows below.

A stop string is found in TAIL, so with overlap a sequence it ends may already be in forward
n+1: that row is wasted and its blocks are still being written. Hence the rules:

* Never two writers: blocks are zeroed (`flush`) only while no forward is in flight. A block
  released while one is (a late stop, a cancellation, a failure) stays DIRTY (never handed out,
  `blocks.py`) until that forward has ended; the next step's HEAD zeroes it, so a request's blocks
  are zeroed within one step of its end.
* A request's final delta is queued only once its blocks are zeroed (or it had none left), so a
  stream that has ended has left nothing in the pool, with overlap or without.
* Failures stay where they were: one request's HEAD or TAIL failing ends that request only; a
  forward's failure ends the requests of its step, found when it lands.

Overlap is on by default where the forward is asynchronous and the host otherwise waits for it
(CUDA); on the CPU the forward and the tail compete for the same cores (`resolve_overlap`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.engine.speculative import accept

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence


@dataclass(frozen=True, slots=True)
class Settled:
    """One share's tokens after HEAD.

    Attributes:
        tokens: tokens appended to the sequence (accepted drafts, then the model's token; cut
            at max_tokens and after an EOS).
        accepted: draft tokens accepted (before the cut).
        verified: the tokens before the cut (what the draft record judges).
        end: "stop" (EOS), "length" (max_tokens reached) or None (the sequence goes on).
    """

    tokens: tuple[int, ...]
    accepted: int
    verified: tuple[int, ...]
    end: str | None


def settle(  # noqa: PLR0913 - every input is one fact about the share
    drafts: Sequence[int],
    ids: Sequence[int],
    *,
    generated: int,
    max_tokens: int,
    eos: Collection[int],
    ignore_eos: bool,
) -> Settled:
    """The tokens a share adds and whether its sequence ends (no stop strings: those are TAIL's).

    Args:
        drafts: the draft tokens the share verified (empty: none).
        ids: the step's tokens for the share's rows (one per row; the last row's is sampled).
        generated: tokens the sequence had generated before this step.
        max_tokens: the request's limit.
        eos: end-of-sequence token ids.
        ignore_eos: the request generates past EOS.

    Returns:
        The settled tokens.

    Raises:
        ConfigError: the number of ids does not match the drafts (from `speculative.accept`).
    """
    verified = tuple(accept(drafts, ids) if drafts else ids[-1:])
    new = verified[: max(max_tokens - generated, 0)]
    hit = None if ignore_eos else next((i for i, t in enumerate(new) if t in eos), None)
    if hit is not None:
        return Settled(new[: hit + 1], len(verified) - 1, verified, "stop")
    return Settled(new, len(verified) - 1, verified,
                   "length" if generated + len(new) >= max_tokens else None)


def text_tokens(tokens: Sequence[int], eos: Collection[int], *, ignore_eos: bool) -> list[int]:
    """The tokens that become text (an EOS is not text unless the request ignores EOS)."""
    return list(tokens) if ignore_eos else [t for t in tokens if t not in eos]


def resolve_overlap(*, setting: bool | None, device_type: str | None) -> bool:
    """Whether the engine launches forward n+1 before step n's TAIL.

    Args:
        setting: the operator's choice (`EngineConfig.overlap`); None picks the default.
        device_type: the runner's torch device type ("cuda", "cpu", ...), None when unknown.

    Returns:
        `setting` when given; else True on CUDA and False elsewhere (see the module docstring).
    """
    return setting if setting is not None else device_type == "cuda"
