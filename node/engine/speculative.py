"""Prompt-lookup speculative decoding: drafts from the request's own tokens, nothing else.

`propose` finds the most recent earlier occurrence of the last n tokens (n from `max_ngram`
down to `min_ngram`) in the request's own history and proposes the tokens that followed it.
`accept` verifies drafts against the greedy argmax of the rows the runner computed for the last
accepted token plus the drafts, inside the step's one batched forward (the drafts ride in the
sequence's decode chunk; their argmax comes with every other row's in the step's single host
transfer): the longest matching prefix is accepted, plus one token from the model (so every step
yields at least one token, exactly the greedy output).

When drafting pays (`DraftRecord`): a drafted token costs one more row of the step's forward;
an accepted one saves the sequence a step. Each sequence keeps a decayed acceptance rate
(accepted / drafted draft tokens, both sums multiplied by `decay` at every update). It drafts
freely for its first `probe_drafts` verified draft tokens; from then on only while the rate is at
least `min_acceptance`. While it does not draft, the lookup still runs (it is cheap) and its first
draft token is checked against the token the model then produces (a "shadow" draft, never sent
to the model): hits raise the rate, so a sequence whose text turns repetitive later drafts again,
and misses keep a sequence whose drafts are always rejected from drafting (tested with scripted
models both ways). So lookup costs at most the probe's rows on text where it does not pay.

Invariants:
* Pure functions of the request's own history: no speculation database, no state across
  requests, so speculation leaves nothing behind when the request ends (the per-sequence
  `DraftRecord`: two decayed sums, a count and at most one shadow token, dropped with it).
* Output is identical to plain greedy decoding (verification is exact argmax), drafting or not.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True)
class PromptLookupConfig:
    """Sizes of the prompt-lookup proposer."""

    num_draft: int = 4
    max_ngram: int = 3
    min_ngram: int = 1
    max_window: int = 1024  # only this many most recent tokens are searched
    probe_drafts: int = 16  # draft tokens every sequence verifies before its rate is judged
    min_acceptance: float = 0.5  # decayed accepted / drafted below which a sequence stops
    decay: float = 0.9  # weight of the past at each update of the rate

    def __post_init__(self) -> None:
        """Validate sizes.

        Raises:
            ConfigError: on inconsistent sizes, or a threshold or decay outside [0, 1].
        """
        if not 1 <= self.min_ngram <= self.max_ngram or self.num_draft < 1 or self.max_window < 2:
            raise ConfigError("bad prompt-lookup sizes")
        if self.probe_drafts < 0 or not 0.0 <= self.min_acceptance <= 1.0 or not (
                0.0 <= self.decay <= 1.0):
            raise ConfigError("bad prompt-lookup acceptance rule")


@dataclass(frozen=True, slots=True)
class DraftRecord:
    """One sequence's speculation so far (see the module docstring).

    Attributes:
        drafted: decayed sum of draft tokens verified (shadow drafts count one each).
        accepted: decayed sum of those accepted.
        verified: draft tokens really verified (the probe counts these).
        shadow: first token of the draft proposed but not sent in the last step, if any.
    """

    drafted: float = 0.0
    accepted: float = 0.0
    verified: int = 0
    shadow: int | None = None

    def record(self, drafted: int, new: Sequence[int], cfg: PromptLookupConfig) -> DraftRecord:
        """The record after a step that verified `drafted` drafts and produced tokens `new`.

        `new` is the accepted drafts plus the model's token (`accept`), or the one sampled token.
        """
        if drafted:
            hits, tried, verified = len(new) - 1, drafted, self.verified + drafted
        elif self.shadow is not None and new:
            hits, tried, verified = int(new[0] == self.shadow), 1, self.verified
        else:
            return DraftRecord(self.drafted, self.accepted, self.verified)
        return DraftRecord(self.drafted * cfg.decay + tried, self.accepted * cfg.decay + hits,
                           verified)

    def pays(self, cfg: PromptLookupConfig) -> bool:
        """True while the sequence should send its drafts to the model."""
        return (self.verified < cfg.probe_drafts
                or self.accepted >= cfg.min_acceptance * self.drafted)

    def plan(self, history: Sequence[int], cfg: PromptLookupConfig
             ) -> tuple[list[int], DraftRecord]:
        """The drafts to verify next step (empty while drafting does not pay) and the new record.

        While drafting does not pay, the lookup's first token becomes the shadow draft.
        """
        drafts = propose(history, cfg)
        if self.pays(cfg):
            return drafts, DraftRecord(self.drafted, self.accepted, self.verified)
        return [], DraftRecord(self.drafted, self.accepted, self.verified,
                               drafts[0] if drafts else None)


def propose(history: Sequence[int], cfg: PromptLookupConfig) -> list[int]:
    """Draft up to `cfg.num_draft` tokens continuing `history` by n-gram lookup.

    The most recent earlier occurrence of the last n tokens (n from `max_ngram` down to
    `min_ngram`) that leaves at least one following token wins. The search runs in C
    (`bytes.rfind` over the window packed as 4-byte integers, aligned hits only).

    Args:
        history: the request's prompt + generated tokens so far (ids < 2**32).
        cfg: proposer sizes.

    Returns:
        The draft tokens (maybe empty).
    """
    hist = array("I", history[-cfg.max_window:])
    n_hist = len(hist)
    raw = hist.tobytes()
    width = hist.itemsize
    for n in range(min(cfg.max_ngram, n_hist - 1), cfg.min_ngram - 1, -1):
        tail = raw[(n_hist - n) * width:]
        end = (n_hist - 1) * width  # the match must end before the last token
        while (at := raw.rfind(tail, 0, end)) >= 0:
            if at % width == 0:
                start = at // width
                return hist[start + n:start + n + cfg.num_draft].tolist()
            end = at + len(tail) - 1  # an unaligned hit: look further left
    return []


def accept(drafts: Sequence[int], best: Sequence[int]) -> list[int]:
    """Verify drafts against greedy argmax.

    Args:
        drafts: the k proposed tokens.
        best: the argmax tokens of the k + 1 rows at the last accepted token and at each draft.

    Returns:
        The accepted drafts followed by one model token (length 1..k+1).

    Raises:
        ConfigError: when there are not k + 1 argmax tokens.
    """
    if len(best) != len(drafts) + 1:
        raise ConfigError("verification needs one argmax per draft plus one")
    out: list[int] = []
    for d, b in zip(drafts, best, strict=False):
        if d != b:
            break
        out.append(d)
    out.append(int(best[len(out)]))
    return out
