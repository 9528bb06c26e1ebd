"""Incremental detokenisation for streaming: text deltas that never split a UTF-8 character.

Byte-level BPE tokens can end in the middle of a multi-byte character; decoding such a prefix
yields U+FFFD. The detokenizer decodes a small window `[prefix, end)` of the ids, and only emits
the new text once it does not end in U+FFFD, holding the incomplete bytes back until the next
token completes them (or `flush` at the end emits whatever is left, exactly as a full decode).

Invariants:
* The concatenation of every delta and the final `flush()` equals the full decode of all ids
  (same `skip_special_tokens`), tested by a hypothesis property over random token sequences.
* One detokenizer per request; it holds that request's ids only and is dropped with it
  (`clear()` drops them early).
"""

from __future__ import annotations

from typing import Any, Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    """The part of a transformers tokenizer used here."""

    def decode(self, token_ids: list[int], **kwargs: Any) -> str:  # noqa: ANN401
        """Decode ids to text."""
        ...


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas."""

    __slots__ = ("_ids", "_prefix", "_read", "_skip", "_tok")

    def __init__(self, tokenizer: Decoder, *, skip_special_tokens: bool = True) -> None:
        """Start an empty stream.

        Args:
            tokenizer: anything with a transformers-style `decode`.
            skip_special_tokens: passed to `decode`.
        """
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # ids[prefix:read] were decoded last time (a clean UTF-8 boundary)
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(
            ids, skip_special_tokens=self._skip, clean_up_tokenization_spaces=False)

    def add(self, token_ids: list[int]) -> str:
        """Append tokens; return the text that is now complete (maybe empty).

        Args:
            token_ids: the newly generated tokens.

        Returns:
            The new text delta.
        """
        self._ids.extend(token_ids)
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """Return the text still held back (at the end of the stream)."""
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text):]

    def clear(self) -> None:
        """Drop the ids held (request finished or cancelled)."""
        self._ids.clear()
        self._prefix = self._read = 0
