"""The SDK's result objects, shaped like openai-python's, parsed strictly from the node's JSON.

Code written against openai-python reads these the same way: `completion.choices[0].message
.content`, `chunk.choices[0].delta.content`, `choice.finish_reason`, `completion.usage
.total_tokens`, `completion.model_dump()`. Pure: JSON values in, frozen values out.

Invariants: every field is type-checked on parse (a malformed answer is a `ProtocolError` naming
the field, never echoing its content); unknown fields are ignored, as openai-python does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hushcc.errors import ProtocolError

# A decoded JSON value (named, because `object` is also a field of the OpenAI result types).
Json = object


def _field(doc: object, name: str, kind: type | tuple[type, ...], *, optional: bool = False
           ) -> Any:  # noqa: ANN401 - a JSON value of the checked kind
    if not isinstance(doc, dict):
        raise ProtocolError(f"expected a JSON object around {name!r}")
    value = doc.get(name)
    if value is None and optional:
        return None
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        raise ProtocolError(f"field {name!r} is missing or of the wrong type")
    return value


class _Dumpable:
    """`model_dump()` as openai-python's pydantic models have it."""

    def model_dump(self) -> dict[str, Any]:
        """The object as plain JSON-compatible values."""
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True, slots=True)
class CompletionUsage(_Dumpable):
    """Token counts of one request (its own, never the node's load)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def parse_optional(cls, doc: Json) -> CompletionUsage | None:
        """Parse the `usage` member of `doc`, when it has one."""
        usage = _field(doc, "usage", dict, optional=True)
        return None if usage is None else cls.parse(usage)

    @classmethod
    def parse(cls, doc: Json) -> CompletionUsage:
        """Parse a `usage` object."""
        return cls(_field(doc, "prompt_tokens", int), _field(doc, "completion_tokens", int),
                   _field(doc, "total_tokens", int))


@dataclass(frozen=True, slots=True)
class ChatCompletionMessage(_Dumpable):
    """The assistant's message."""

    role: str
    content: str | None


@dataclass(frozen=True, slots=True)
class Choice(_Dumpable):
    """One choice of a chat completion."""

    index: int
    message: ChatCompletionMessage
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class ChatCompletion(_Dumpable):
    """A whole chat completion (`stream=False`)."""

    id: str
    choices: list[Choice]
    created: int
    model: str
    usage: CompletionUsage | None
    object: str = "chat.completion"

    @classmethod
    def parse(cls, doc: Json) -> ChatCompletion:
        """Parse the node's `chat.completion` JSON."""
        choices = []
        for item in _field(doc, "choices", list):
            message = _field(item, "message", dict)
            choices.append(Choice(
                _field(item, "index", int),
                ChatCompletionMessage(_field(message, "role", str),
                                      _field(message, "content", str, optional=True)),
                _field(item, "finish_reason", str, optional=True)))
        return cls(_field(doc, "id", str), choices, _field(doc, "created", int),
                   _field(doc, "model", str), CompletionUsage.parse_optional(doc))


@dataclass(frozen=True, slots=True)
class ChoiceDelta(_Dumpable):
    """What one streamed event adds to the message."""

    content: str | None
    role: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkChoice(_Dumpable):
    """One choice of a streamed chunk."""

    index: int
    delta: ChoiceDelta
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class ChatCompletionChunk(_Dumpable):
    """One streamed event of a chat completion (`stream=True`)."""

    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    usage: CompletionUsage | None = None
    object: str = "chat.completion.chunk"

    @classmethod
    def parse(cls, doc: Json) -> ChatCompletionChunk:
        """Parse one `chat.completion.chunk` event."""
        choices = []
        for item in _field(doc, "choices", list):
            delta = _field(item, "delta", dict)
            choices.append(ChunkChoice(
                _field(item, "index", int),
                ChoiceDelta(_field(delta, "content", str, optional=True),
                            _field(delta, "role", str, optional=True)),
                _field(item, "finish_reason", str, optional=True)))
        return cls(_field(doc, "id", str), choices, _field(doc, "created", int),
                   _field(doc, "model", str), CompletionUsage.parse_optional(doc))


@dataclass(frozen=True, slots=True)
class Model(_Dumpable):
    """One served model (`GET /v1/models`)."""

    id: str
    created: int
    owned_by: str
    object: str = "model"

    @classmethod
    def parse_list(cls, doc: Json) -> list[Model]:
        """Parse a `list` of models."""
        return [cls(_field(m, "id", str), _field(m, "created", int), _field(m, "owned_by", str))
                for m in _field(doc, "data", list)]
