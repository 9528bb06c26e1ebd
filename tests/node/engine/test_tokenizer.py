"""`encode_chat` refuses malformed chats with a ProtocolError naming no content (issue 9 item 3)."""

from __future__ import annotations

from typing import Any

import pytest

from hushcc.errors import ProtocolError
from node.engine.tokenizer import encode_chat

CANARY = "canary-4f1e-chat"


class TemplateTokenizer:
    """Renders like a chat template: `role: content` joined, one id per character."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.fail = fail

    def apply_chat_template(self, chat: list[dict[str, str]], **_kw: Any) -> list[int]:
        if self.fail is not None:
            raise self.fail
        return [ord(c) for m in chat for c in f"{m['role']}: {m['content']}\n"]


@pytest.mark.parametrize("messages", [
    pytest.param([("user", None)], id="none-content"),
    pytest.param([("user", 5)], id="int-content"),
    pytest.param([("user", [{"type": "text", "text": CANARY}])], id="list-content"),
    pytest.param([("user", {"text": CANARY})], id="dict-content"),
    pytest.param([("user", CANARY.encode())], id="bytes-content"),
    pytest.param([(["user"], CANARY)], id="unhashable-role"),
    pytest.param([("tool", CANARY)], id="unknown-role"),
    pytest.param([("user", CANARY, "x")], id="triple"),
    pytest.param([], id="empty"),
    pytest.param(CANARY, id="string-not-list"),
])
def test_malformed_chat_is_a_protocol_error(messages: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_chat(TemplateTokenizer(), messages)
    assert CANARY not in str(info.value)


def test_template_failure_is_wrapped_without_its_message() -> None:
    import jinja2  # noqa: PLC0415

    failure = jinja2.exceptions.UndefinedError(f"'{CANARY}' is undefined")
    with pytest.raises(ProtocolError) as info:
        encode_chat(TemplateTokenizer(fail=failure), [("user", "hello")])
    assert CANARY not in str(info.value)
    assert info.value.__cause__ is failure


def test_well_formed_chat_is_encoded() -> None:  # positive twin
    ids = encode_chat(TemplateTokenizer(), [("system", "be brief"), ("user", "hi")])
    assert "".join(map(chr, ids)) == "system: be brief\nuser: hi\n"
