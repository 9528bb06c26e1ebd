"""Engine-side state of one live request, and its text: the TAIL of a step (`overlap.py`).

Not pure: `emit` puts text deltas on the request's queue. Everything here belongs to one
request and is dropped with it (`drop`).

Invariants:
* Text that could begin a stop string is held back (`pending`) until it cannot; a stop string
  is never streamed, and the text after it never is either.
* `generated` counts the request's tokens itself, so the final delta reports them even after
  the scheduler has erased the sequence (EOS and max_tokens ends happen in HEAD, before TAIL).
* `drop` leaves no token, text or seed behind (the scheduler erases the sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from node.engine.requests import Delta
from node.engine.sampling import find_stop, stop_holdback
from node.engine.speculative import DraftRecord

if TYPE_CHECKING:
    import asyncio

    from node.engine.detokenize import IncrementalDetokenizer
    from node.engine.sampling import SamplingParams
    from node.engine.sequence import Sequence


@dataclass(slots=True, eq=False)
class LiveRequest:
    """Engine-side state of one live request (dropped when it ends).

    Attributes:
        request_id: random id (the stream's handle for `cancel`).
        seq: the scheduler's sequence.
        params: sampling parameters.
        detok: the incremental detokenizer.
        queue: the stream's deltas.
        seed: sampling seed (None when greedy).
        generated: tokens generated so far.
        pending: decoded text held back because it may begin a stop string.
        cancelled: `cancel` was called; the next step boundary ends it.
        drafts: the prompt-lookup record.
    """

    request_id: str
    seq: Sequence
    params: SamplingParams
    detok: IncrementalDetokenizer
    queue: asyncio.Queue[Delta | BaseException]
    seed: int | None = None
    generated: int = 0
    pending: str = ""
    cancelled: bool = False
    drafts: DraftRecord = field(default_factory=DraftRecord)

    @property
    def prompt_tokens(self) -> int:
        """Prompt length in tokens."""
        return self.seq.num_prompt_tokens

    def delta(self, text: str, finish_reason: str | None) -> Delta:
        """A delta of this request with its token counts."""
        return Delta(text, finish_reason, self.prompt_tokens, self.generated)

    def emit(self, tokens: list[int], *, final: bool) -> bool:
        """Detokenise `tokens` and stream the text through the stop-string check.

        Args:
            tokens: the step's tokens that become text.
            final: the sequence ended in HEAD (EOS or max_tokens): everything held back is
                flushed into `pending`, for the final delta.

        Returns:
            True when a stop string ended the request (`pending` is the text before it).
        """
        text = self.detok.add(tokens)
        if final:
            text += self.detok.flush()
        stop = self.params.stop
        self.pending += text
        cut = find_stop(self.pending, stop) if stop else -1
        if cut >= 0:
            self.pending = self.pending[:cut]
            return True
        if final:
            return False
        keep = stop_holdback(self.pending, stop) if stop else 0
        ready = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        if ready:
            self.queue.put_nowait(self.delta(ready, None))
        return False

    def drop(self) -> None:
        """Drop every piece of request content held here."""
        self.seq.erase()
        self.detok.clear()
        self.pending = ""
        self.seed = None
