"""The OpenAI-compatible inner API of the gateway: parse requests, build responses and SSE events.

Pure: JSON bytes in, frozen values or bytes out; the response id's randomness and the creation
time are parameters. Served routes: `POST /v1/chat/completions`, `POST /v1/completions`,
`GET /v1/models`; anything else is an `ApiError` 404 (the gateway never forwards; G15).

Invariants:
* Error messages name the rule broken, never the request's content (no prompt, no path echo).
* Response bodies carry no load oracle (E9): the id is random, usage counts are the request's own.
* Every streamed event can be padded to a fixed size bucket (R7) with an SSE comment line, which
  every SSE parser ignores; `padded_chunk_size` gives the bucket.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hushcc.errors import ProtocolError
from ohttp.varint import encode_varint

CHAT_PATH = b"/v1/chat/completions"
COMPLETIONS_PATH = b"/v1/completions"
MODELS_PATH = b"/v1/models"
ROLES = frozenset({"system", "user", "assistant"})
MIN_BUCKET = 256
_KNOWN_FIELDS = frozenset({
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "seed", "stop", "stream", "stream_options", "echo", "n", "user",
    "cache_salt", "ignore_eos",
})


class ApiError(ProtocolError):
    """A request the API refuses: answered inside the envelope as OpenAI error JSON."""

    def __init__(self, status: int, message: str, code: str,
                 kind: str = "invalid_request_error") -> None:
        """Create an error with its HTTP status, OpenAI `type` and `code` (no content)."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.kind = kind

    def body(self) -> bytes:
        """OpenAI's error JSON."""
        return json.dumps({"error": {"message": str(self), "type": self.kind, "param": None,
                                     "code": self.code}}).encode()


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Per-request caps checked at parse time (the engine checks token counts again)."""

    max_prompt_chars: int = 32_768
    max_messages: int = 256
    max_tokens: int = 1024
    default_max_tokens: int = 256


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed generation request."""

    chat: bool
    messages: tuple[tuple[str, str], ...]
    prompt: str
    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    echo: bool
    cache_salt: str | None
    ignore_eos: bool = False


def _number(doc: dict[str, Any], name: str, default: float, *, low: float, high: float) -> float:
    value = doc.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number", "invalid_value")
    if not low <= value <= high:
        raise ApiError(400, f"{name} is out of range", "invalid_value")
    return float(value)


def _integer(doc: dict[str, Any], name: str, default: int | None, *, low: int, high: int
             ) -> int | None:
    value = doc.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer", "invalid_value")
    if not low <= value <= high:
        raise ApiError(400, f"{name} is out of range", "invalid_value")
    return value


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise ApiError(400, "stop must be a string or a list of strings", "invalid_value")
    return tuple(items)


def _messages(value: object, limits: ApiLimits) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value or len(value) > limits.max_messages:
        raise ApiError(400, "messages must be a non-empty list", "invalid_value")
    out = []
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, "each message needs a role: system, user or assistant",
                           "invalid_value")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text parts are served
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise ApiError(400, "only text content parts are supported", "invalid_value")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, "message content must be text", "invalid_value")
        out.append((str(m["role"]), content))
    return tuple(out)


def _prompt(raw: object) -> tuple[str, tuple[int, ...]]:
    """A completions prompt: text, or token ids (OpenAI accepts both)."""
    if isinstance(raw, str) and raw:
        return raw, ()
    if isinstance(raw, list) and raw and all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in raw):
        return "", tuple(raw)
    raise ApiError(400, "prompt must be a non-empty string or list of token ids",
                   "invalid_value")


def parse_call(path: bytes, body: bytes, limits: ApiLimits) -> Call:
    """Parse a chat or text completion request body.

    Raises:
        ApiError: malformed JSON, unknown fields' types, or a cap exceeded.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not JSON", "invalid_json") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    chat = path == CHAT_PATH
    if chat:
        messages, prompt = _messages(doc.get("messages"), limits), ""
        prompt_ids: tuple[int, ...] = ()
        size = sum(len(c) for _, c in messages)
    else:
        raw, messages = doc.get("prompt"), ()
        prompt, prompt_ids = _prompt(raw)
        size = len(prompt) + len(prompt_ids)
    if size > limits.max_prompt_chars:
        raise ApiError(400, "the prompt is too long", "context_length_exceeded")
    if _integer(doc, "n", 1, low=1, high=1) != 1:
        raise ApiError(400, "n must be 1", "invalid_value")
    stream = doc.get("stream", False)
    options = doc.get("stream_options") or {}
    salt, ignore_eos = doc.get("cache_salt"), doc.get("ignore_eos", False)
    if not isinstance(stream, bool) or not isinstance(options, dict) or not (
            salt is None or (isinstance(salt, str) and 16 <= len(salt) <= 256)
    ) or not isinstance(ignore_eos, bool):
        raise ApiError(400, "stream, stream_options, cache_salt or ignore_eos is malformed",
                       "invalid_value")
    max_tokens = doc.get("max_completion_tokens", doc.get("max_tokens"))
    return Call(
        chat=chat, messages=messages, prompt=prompt, prompt_ids=prompt_ids,
        max_tokens=_integer({"max_tokens": max_tokens}, "max_tokens", limits.default_max_tokens,
                            low=1, high=limits.max_tokens) or 1,
        temperature=_number(doc, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(doc, "top_p", 1.0, low=1e-9, high=1.0),
        top_k=_integer(doc, "top_k", 0, low=0, high=1000) or 0,
        seed=_integer(doc, "seed", None, low=0, high=2**63 - 1),
        stop=_stop(doc.get("stop")), stream=stream,
        include_usage=options.get("include_usage") is True,
        echo=(not chat) and doc.get("echo") is True and not prompt_ids, cache_salt=salt,
        ignore_eos=ignore_eos)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(  # noqa: PLR0913 - the response's fields, all named
        call: Call, *, model: str, response_id: str, created: int, text: str,
        finish_reason: str, counts: tuple[int, int]) -> bytes:
    """The non-streaming response JSON (`chat.completion` or `text_completion`)."""
    if call.chat:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason,
                                  "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "finish_reason": finish_reason, "logprobs": None, "text": text}
    return json.dumps({
        "id": response_id, "object": "chat.completion" if call.chat else "text_completion",
        "created": created, "model": model, "choices": [choice], "usage": usage(*counts),
    }).encode()


def stream_event(  # noqa: PLR0913 - the event's fields, all named
        call: Call, *, model: str, response_id: str, created: int, text: str | None,
        finish_reason: str | None, counts: tuple[int, int] | None = None) -> bytes:
    """One SSE `data:` event of a stream (`chat.completion.chunk` or `text_completion`).

    `text=None` with `counts` makes the final usage-only event (`stream_options.include_usage`).
    """
    choices: list[dict[str, Any]] = []
    if text is not None:
        if call.chat:
            choices = [{"index": 0, "delta": {"content": text}, "finish_reason": finish_reason}]
        else:
            choices = [{"index": 0, "text": text, "logprobs": None,
                        "finish_reason": finish_reason}]
    doc: dict[str, Any] = {
        "id": response_id, "object": "chat.completion.chunk" if call.chat else "text_completion",
        "created": created, "model": model, "choices": choices}
    if counts is not None:
        doc["usage"] = usage(*counts)
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


def models_body(model: str, created: int) -> bytes:
    """`GET /v1/models`: the one model this node serves."""
    return json.dumps({"object": "list", "data": [
        {"id": model, "object": "model", "created": created, "owned_by": "hushcc"}]}).encode()


def padded_chunk_size(natural: int, minimum: int = MIN_BUCKET) -> int:
    """The bucket a chunk of `natural` bytes is padded to: `minimum` times a power of two."""
    size = minimum
    while size < natural:
        size *= 2
    return size


def pad_event(event: bytes, minimum: int = MIN_BUCKET) -> bytes:
    """The binary-HTTP content chunk of an SSE event, padded to exactly its bucket size.

    A leading SSE comment line (`:` + spaces + LF; ignored by SSE parsers) fills the chunk so
    `len(result) == padded_chunk_size(...)` whatever the event's length.

    Raises:
        ProtocolError: the event is empty.
    """
    if not event:
        raise ProtocolError("an event must not be empty")
    natural = len(encode_varint(len(event) + 2)) + len(event) + 2
    target = padded_chunk_size(natural, minimum)
    for prefix in (1, 2, 4, 8):
        length = target - prefix
        if len(encode_varint(length)) == prefix and length >= len(event) + 2:
            padded = b":" + b" " * (length - len(event) - 2) + b"\n" + event
            return encode_varint(length) + padded
    raise ProtocolError("event too large to pad")  # a bucket >= 2^62 bytes
