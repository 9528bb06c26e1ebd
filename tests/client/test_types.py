"""Result objects read like openai-python's and reject malformed answers by field name."""

from __future__ import annotations

import json

import pytest

from client.types import ChatCompletion, ChatCompletionChunk, Model
from hushcc.errors import ProtocolError

WHOLE = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "hi"}}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
         "system_fingerprint": "ignored"}
CHUNK = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "h"}, "finish_reason": None}]}


def test_a_completion_reads_like_openai_python() -> None:
    completion = ChatCompletion.parse(WHOLE)
    assert completion.choices[0].message.content == "hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 4
    assert completion.object == "chat.completion"
    assert completion.model_dump()["choices"][0]["message"]["role"] == "assistant"
    json.dumps(completion.model_dump())


def test_a_chunk_reads_like_openai_python() -> None:
    chunk = ChatCompletionChunk.parse(CHUNK)
    assert chunk.choices[0].delta.content == "h"
    assert chunk.choices[0].finish_reason is None
    assert chunk.usage is None
    usage_only = ChatCompletionChunk.parse({**CHUNK, "choices": [], "usage": WHOLE["usage"]})
    assert usage_only.usage is not None
    assert usage_only.usage.prompt_tokens == 3


def test_models_parse() -> None:
    models = Model.parse_list({"object": "list", "data": [
        {"id": "m", "object": "model", "created": 2, "owned_by": "hushcc"}]})
    assert [m.id for m in models] == ["m"]


@pytest.mark.parametrize(("path", "value"), [
    pytest.param(("id",), 7, id="id-not-string"),
    pytest.param(("created",), True, id="created-bool"),
    pytest.param(("choices",), {}, id="choices-not-list"),
    pytest.param(("usage", "total_tokens"), "4", id="usage-string"),
])
def test_a_malformed_field_is_named_not_echoed(path: tuple[str, ...], value: object) -> None:
    doc = json.loads(json.dumps(WHOLE))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError, match=path[-1]) as caught:
        ChatCompletion.parse(doc)
    assert "chatcmpl" not in str(caught.value)
