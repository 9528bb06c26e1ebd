"""Fixed-pace emission of a streamed answer (SECURITY.md R7, the optional policy).

With `pace` on, the gateway seals one chunk per tick of a fixed clock instead of one per engine
delta, so the times chunks leave the node follow the clock, not token boundaries: a tick carries
the text that arrived since the last one (coalesced into one event, up to what fits the padding
bucket, the rest carried to the next tick), or an empty padded keep-alive when nothing arrived.
Every chunk is still padded to the same bucket (`node.openai_api.pad_event`).

Not an I/O shell: the clock and the sleep are parameters (`monotonic`, `sleep_until`).

Invariants:
* Tick k is at `start + k * interval` exactly; a tick missed (the loop was late) is skipped, never
  compressed, so every emission is on the grid and never earlier than its tick.
* The engine's stream is drained by its own task (`Inbox.pump`), so a slow tick never blocks the
  engine and an early delta never moves a tick; closing the pacer cancels that task.
* Text is released in order and whole (a prefix of what arrived); the finish reason travels with
  the last of the text.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hushcc.errors import HushError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

KEEPALIVE = b"\n"  # padded to ": ...\n\n": an SSE comment and a blank line, no event dispatched


async def sleep_until(deadline: float) -> None:
    """Sleep until `time.monotonic()` reaches `deadline` (the default `Ticker` sleep)."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


class Ticker:
    """A fixed clock: `wait()` returns at `start + k * interval`, k = 1, 2, ... (module rules)."""

    def __init__(self, interval: float, *, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = sleep_until) -> None:
        """Start the clock now."""
        self.interval, self._monotonic, self._sleep = interval, monotonic, sleep
        self.start, self._k = monotonic(), 0

    async def wait(self) -> None:
        """Sleep until the next tick on the grid that is not already past."""
        self._k += 1
        late = self._monotonic() - (self.start + self._k * self.interval)
        if late > 0:
            self._k += math.ceil(late / self.interval)
        await self._sleep(self.start + self._k * self.interval)


@dataclass(frozen=True, slots=True)
class Slice:
    """What one tick carries: text (maybe empty) and, with the last text, the finish reason."""

    text: str
    finish_reason: str | None


class Inbox:
    """The engine's deltas, collected by a task as they come, taken tick by tick."""

    def __init__(self) -> None:
        """Create an empty inbox."""
        self.text, self.finish_reason = "", None
        self.counts, self.done, self.failed = (0, 0), False, False
        self._finish_sent = False

    async def pump(self, stream: AsyncIterator[Any]) -> None:
        """Drain `stream` (engine deltas) into the inbox; mark it done (or failed) at the end."""
        try:
            async for delta in stream:
                self.text += delta.text
                self.counts = (delta.prompt_tokens, delta.completion_tokens)
                self.finish_reason = delta.finish_reason or self.finish_reason
        except HushError:  # the engine failed this request: the gateway answers an error event
            self.failed = True
        finally:
            self.done = True

    def take(self, fits: Callable[[str], bool]) -> Slice | None:
        """The longest prefix of the pending text that `fits` (at least one character).

        None when there is nothing to send this tick (keep-alive, or the end once `done`).
        """
        if not self.text:
            if self.done and self.finish_reason is not None and not self._finish_sent:
                self._finish_sent = True
                return Slice("", self.finish_reason)
            return None
        low, high = 1, len(self.text)
        while low < high:  # binary search: longest prefix whose event fits the bucket
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(self.text[:mid]) else (low, mid - 1)
        text, self.text = self.text[:low], self.text[low:]
        if self.text or not self.done or self.finish_reason is None:
            return Slice(text, None)
        self._finish_sent = True
        return Slice(text, self.finish_reason)

    @property
    def drained(self) -> bool:
        """The stream ended and everything it produced has been taken."""
        return self.done and not self.text and (self.finish_reason is None or self._finish_sent)


async def paced(stream: AsyncIterator[Any], inbox: Inbox, ticker: Ticker, *,
                event: Callable[[Slice], bytes], fits: Callable[[str], bool]
                ) -> AsyncIterator[bytes]:
    """One SSE event per tick (text or `KEEPALIVE`) until `stream` is drained into `inbox`.

    Returns on the tick that finds the stream drained, having yielded nothing for it: the caller
    emits its closing events from that tick on.
    """
    task = asyncio.create_task(inbox.pump(stream))
    try:
        while True:
            await ticker.wait()
            piece = inbox.take(fits)
            if piece is not None:
                yield event(piece)
            elif inbox.drained:
                return
            else:
                yield KEEPALIVE
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
