"""Batched sampling on the logits' device: every row of a step decided at once, one host transfer.

`run_and_pick` is what the engine's worker thread runs for a step: the forward, then
`pick_step`, the batched sampling: given each share's logits rows and what it wants from them
(`RowsWanted`), it lays out one `[rows, vocab]` tensor and one list of `SampledRow`s and calls
`choose_tokens` once; `pick_alone` is the per-row reference path for one share (used when the
batched call fails, so a failure stays inside each request's own boundary).

`choose` takes the step's logits `[rows, vocab]` (on the runner's device) and returns, on that
device, one token per row: the argmax of the row, except for the rows listed as `SampledRow`,
which are sampled (temperature, top-k, top-p, the request's own uniform draw). `choose_tokens`
adds the step's single device-to-host transfer (`.tolist()`). Draft verification needs nothing
else: its rows are argmax rows like greedy decoding.

Invariants:
* Row for row, `choose` gives what the per-row reference `sampling.sample` gives for the same
  logits, parameters and draw (tested): greedy rows are the argmax of the raw logits (as draft
  verification), sampled rows go through fp64, NaN -> -inf, a shift by the row's maximum before
  the division by the temperature, top-k then top-p over a stable descending sort, and an
  inverse CDF in vocabulary order; a row whose distribution is degenerate (non-finite maximum,
  non-finite or zero mass) falls back to the argmax of its cleaned logits.
* Never raises on values: NaN/inf logits, a tiny temperature or top_p. Every operation is
  row-wise, so one request's degenerate row changes no other row.
* No host synchronisation inside `choose`: the per-row parameters travel host -> device in two
  copies (pinned, non-blocking on CUDA); the draws are computed on the host from the request's
  seed and token counter (`sampling.seeded_uniform`), so the same seed gives the same tokens
  whatever else is in the batch, on CPU and GPU alike.
* Nothing is kept between calls: every tensor here is a temporary of the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hushcc.errors import ConfigError
from node.engine.sampling import sample, seeded_uniform

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from node.engine.batch import ForwardChunk
    from node.engine.sampling import SamplingParams

Rows = list[torch.Tensor | None]  # per share of a step: its logits rows (None: not computed)
Picks = list[list[int] | None]  # per share: its tokens (None: nothing wanted, or sample alone)


@dataclass(frozen=True, slots=True)
class SampledRow:
    """One row of a step's logits that is sampled rather than argmax'ed.

    Attributes:
        row: index of the row in the step's logits (each row listed at most once).
        temperature: > 0 (a greedy request is an argmax row, not a `SampledRow`).
        top_k: keep the k most likely tokens (0 = off).
        top_p: nucleus mass in (0, 1] (1.0 = off).
        draw: the request's uniform in [0, 1) for this token.
    """

    row: int
    temperature: float
    top_k: int
    top_p: float
    draw: float


@dataclass(frozen=True, slots=True)
class RowsWanted:
    """What one share of a step wants from its logits rows.

    Attributes:
        params: the request's sampling parameters.
        seed: the request's sampling seed (None: greedy).
        counter: tokens the request has sampled so far (indexes its draw).
        verify: the rows verify drafts: every row is argmax.
    """

    params: SamplingParams
    seed: int | None
    counter: int
    verify: bool

    def sampled_row(self, row: int) -> SampledRow | None:
        """The `SampledRow` for its last logits row at `row`, or None when that row is argmax."""
        if self.verify or self.seed is None:
            return None
        p = self.params
        return SampledRow(row, p.temperature, p.top_k, p.top_p,
                          seeded_uniform(self.seed, self.counter))


def pick_step(outs: Sequence[torch.Tensor | None], wants: Sequence[RowsWanted | None]
              ) -> list[list[int] | None]:
    """Tokens of every wanted logits row of a step, in one batched call (one host transfer).

    Args:
        outs: per share, its logits `[n, vocab]` (or None: nothing computed).
        wants: per share, what it wants (None: nothing to sample).

    Returns:
        Per share, its rows' tokens, or None where nothing was wanted -- or everywhere when the
        batched call failed (the caller then uses `pick_alone`, share by share).
    """
    parts: list[torch.Tensor] = []
    sampled: list[SampledRow] = []
    spans: list[tuple[int, int] | None] = []
    row = 0
    for out, want in zip(outs, wants, strict=True):
        if out is None or want is None or out.shape[0] == 0:
            spans.append(None)
            continue
        parts.append(out)
        spans.append((row, row + out.shape[0]))
        row += out.shape[0]
        if (s := want.sampled_row(row - 1)) is not None:
            sampled.append(s)
    if not parts:
        return [None] * len(spans)
    try:
        ids = choose_tokens(join_rows(parts), sampled)
    except Exception:  # noqa: BLE001 - the caller decides each share alone, in its own boundary
        return [None] * len(spans)
    return [None if span is None else ids[span[0]:span[1]] for span in spans]


def run_and_pick(
    forward: Callable[[list[ForwardChunk]], list[torch.Tensor]],
    chunks: Sequence[ForwardChunk | None],
    wants: Sequence[RowsWanted | None],
    pick: Callable[[Rows, Sequence[RowsWanted | None]], Picks] = pick_step,
) -> tuple[Rows, Picks]:
    """A step's forward, then its one batched sampling call (the engine's worker thread).

    So the host transfer of the ids waits for the device there, never on the event loop.

    Args:
        forward: the runner's `forward`.
        chunks: per share, its chunk (None: nothing to compute).
        wants: per share, what it wants sampled.
        pick: the batched sampling call (`pick_step`).

    Returns:
        Per share, its logits rows and its tokens (see `pick_step`).
    """
    rows = iter(forward([c for c in chunks if c is not None]))
    outs: Rows = [None if c is None else next(rows) for c in chunks]
    return outs, pick(outs, wants)


def join_rows(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack `[n_i, vocab]` blocks into one `[sum n_i, vocab]`.

    Without a copy when they lie one after the other in one storage (the runner's split of its
    logits), else by `cat`.
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    vocab, at, ptr = first.shape[-1], first.storage_offset(), first.untyped_storage().data_ptr()
    for p in parts:
        if (not p.is_contiguous() or p.storage_offset() != at
                or p.untyped_storage().data_ptr() != ptr):
            return torch.cat(list(parts))
        at += p.numel()
    return first.as_strided((sum(p.shape[0] for p in parts), vocab), (vocab, 1))


def pick_alone(out: torch.Tensor, want: RowsWanted) -> list[int]:
    """The tokens of one share's logits rows by the per-row reference (`sampling.sample`)."""
    if want.verify:
        ids: list[int] = torch.argmax(out, dim=-1).tolist()
        return ids
    draw = 0.0 if want.seed is None else seeded_uniform(want.seed, want.counter)
    return [sample(out[-1], want.params, draw)]


def choose_tokens(logits: torch.Tensor, sampled: Sequence[SampledRow]) -> list[int]:
    """One token per row of `logits` (see `choose`), brought to the host in one transfer."""
    ids: list[int] = choose(logits, sampled).tolist()
    return ids


def choose(logits: torch.Tensor, sampled: Sequence[SampledRow]) -> torch.Tensor:
    """One token per row, on the logits' device, without a host synchronisation.

    Args:
        logits: `[rows, vocab]` float logits of the step.
        sampled: the rows to sample (distinct row indices); every other row is argmax.

    Returns:
        `[rows]` int64 token ids on `logits.device`.

    Raises:
        ConfigError: when `logits` is not 2-D or a row index is out of range or repeated.
    """
    if logits.dim() != 2:
        raise ConfigError("logits must be [rows, vocab]")
    ids = torch.argmax(logits, dim=-1)
    if not sampled:
        return ids
    rows = [s.row for s in sampled]
    if len(set(rows)) != len(rows) or min(rows) < 0 or max(rows) >= logits.shape[0]:
        raise ConfigError("sampled rows must be distinct rows of the logits")
    vocab = logits.shape[-1]
    ints = _to_device(torch.tensor([rows, [s.top_k for s in sampled]], dtype=torch.long),
                      logits.device)
    reals = _to_device(torch.tensor([[s.temperature for s in sampled],
                                     [s.top_p for s in sampled],
                                     [s.draw for s in sampled]], dtype=torch.float64),
                       logits.device)
    filtered = any(0 < s.top_k < vocab or s.top_p < 1.0 for s in sampled)
    picked = sample_rows(logits.index_select(0, ints[0]), ints[1], reals[0], reals[1], reals[2],
                         filtered=filtered)
    return ids.index_copy(0, ints[0], picked)


def sample_rows(  # noqa: PLR0913 - one tensor per sampling parameter
    logits: torch.Tensor,
    top_k: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    draw: torch.Tensor,
    *,
    filtered: bool = True,
) -> torch.Tensor:
    """Sample one token from each row of `[n, vocab]` logits; the parameters are `[n]` tensors.

    Args:
        logits: the rows to sample.
        top_k: int64, 0 (or >= vocab) = off.
        temperature: fp64, > 0.
        top_p: fp64 in (0, 1], 1 = off.
        draw: fp64 uniforms in [0, 1).
        filtered: False when no row uses top-k or top-p (the sort is skipped; same result).

    Returns:
        `[n]` int64 token ids.
    """
    vocab = logits.shape[-1]
    neg_inf = float("-inf")
    clean = logits.double()
    clean = clean.masked_fill(torch.isnan(clean), neg_inf)
    top = clean.amax(dim=-1, keepdim=True)
    finite_top = torch.isfinite(top)
    # shift before dividing (see sampling.sample); a non-finite maximum falls back below
    x = (clean - torch.where(finite_top, top, 0.0)) / temperature[:, None]
    if filtered:
        sorted_x, order = torch.sort(x, dim=-1, descending=True, stable=True)
        k = torch.where((top_k > 0) & (top_k < vocab), top_k, vocab)
        kth = sorted_x.gather(1, (k - 1)[:, None])
        sorted_x = sorted_x.masked_fill(sorted_x < kth, neg_inf)
        probs = torch.softmax(sorted_x, dim=-1)
        drop = ((torch.cumsum(probs, dim=-1) - probs) >= top_p[:, None]) & (top_p < 1.0)[:, None]
        x = torch.empty_like(x).scatter_(1, order, sorted_x.masked_fill(drop, neg_inf))
    probs = torch.softmax(x, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    total = cdf[:, -1:]
    ok = torch.isfinite(probs).all(dim=-1, keepdim=True) & (total > 0) & finite_top
    picked = torch.searchsorted(cdf, draw[:, None] * total, right=True).clamp_(max=vocab - 1)
    return torch.where(ok, picked, clean.argmax(dim=-1, keepdim=True)).squeeze(-1)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to `device` without blocking the host (pinned on CUDA)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
