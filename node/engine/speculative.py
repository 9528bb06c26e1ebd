"""Prompt-lookup speculative decoding: drafts from the request's own tokens, nothing else.

`propose` finds the most recent earlier occurrence of the last n tokens (n from `max_ngram`
down to `min_ngram`) in the request's own history and proposes the tokens that followed it.
`accept` verifies drafts against the greedy argmax of the rows the runner computed for the last
accepted token plus the drafts (their argmax comes with every other row's in the step's single
host transfer): the longest matching prefix is accepted, plus one token from
the model (so every step yields at least one token, exactly the greedy output).

Invariants:
* Pure functions of the request's own history: no speculation database, no state across
  requests or steps, so speculation leaves nothing behind when the request ends.
* Output is identical to plain greedy decoding (verification is exact argmax).
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        """Validate sizes.

        Raises:
            ConfigError: on inconsistent sizes.
        """
        if not 1 <= self.min_ngram <= self.max_ngram or self.num_draft < 1 or self.max_window < 2:
            raise ConfigError("bad prompt-lookup sizes")


def propose(history: Sequence[int], cfg: PromptLookupConfig) -> list[int]:
    """Draft up to `cfg.num_draft` tokens continuing `history` by n-gram lookup.

    Args:
        history: the request's prompt + generated tokens so far.
        cfg: proposer sizes.

    Returns:
        The draft tokens (maybe empty).
    """
    hist = list(history[-cfg.max_window:])
    n_hist = len(hist)
    for n in range(min(cfg.max_ngram, n_hist - 1), cfg.min_ngram - 1, -1):
        tail = hist[n_hist - n:]
        # most recent earlier match first; the match must leave at least one following token
        for start in range(n_hist - n - 1, -1, -1):
            if hist[start:start + n] == tail:
                follow = hist[start + n:start + n + cfg.num_draft]
                if follow:
                    return follow
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
