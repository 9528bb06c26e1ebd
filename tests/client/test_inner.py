"""Inner requests: checked fields, a Date on every request; inner errors mapped by status."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from client.inner import (
    APIStatusError,
    DateCorrectionError,
    chat_body,
    inner_request,
    raise_for_status,
)
from hushcc.errors import ProtocolError
from ohttp.bhttp import decode_request
from ohttp.problems import DATE

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MESSAGES = [{"role": "user", "content": "hello"}]


def test_the_chat_body_carries_only_what_was_asked() -> None:
    body = json.loads(chat_body("m", MESSAGES, stream=True,
                                options={"max_tokens": 8, "temperature": 0.5, "seed": None}))
    assert body == {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 8,
                    "temperature": 0.5}


@pytest.mark.parametrize("options", [
    pytest.param({"max_tokens": 1.5}, id="float-max-tokens"),
    pytest.param({"max_tokens": True}, id="bool-max-tokens"),
    pytest.param({"temperature": float("nan")}, id="nan-temperature"),
    pytest.param({"logit_bias": {}}, id="unsupported"),
])
def test_a_bad_option_fails_before_anything_is_built(options: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        chat_body("m", MESSAGES, stream=False, options=options)


@pytest.mark.parametrize("messages", [[], [{"role": "user"}], [{"role": "user", "content": 1}]])
def test_bad_messages_are_refused_without_echo(messages: list[dict[str, str]]) -> None:
    with pytest.raises(ProtocolError) as caught:
        chat_body("m", messages, stream=False, options={})
    assert "hello" not in str(caught.value)


def test_every_inner_request_has_a_date() -> None:
    request = decode_request(inner_request(b"POST", b"/v1/chat/completions", b"{}", now=NOW))
    assert (b"date", b"Sun, 29 Nov 2026 12:00:00 GMT") in request.headers
    assert request.path == b"/v1/chat/completions"


def test_a_date_problem_offers_the_gateway_clock() -> None:
    problem = DATE.to_response(NOW)
    with pytest.raises(DateCorrectionError) as caught:
        raise_for_status(problem.status, problem.headers, problem.content)
    assert caught.value.gateway_date == NOW


def test_an_openai_error_keeps_status_and_code() -> None:
    body = json.dumps({"error": {"message": "x", "type": "invalid_request_error",
                                 "code": "unknown_url"}}).encode()
    with pytest.raises(APIStatusError) as caught:
        raise_for_status(404, ((b"content-type", b"application/json"),), body)
    assert (caught.value.status_code, caught.value.code) == (404, "unknown_url")
    raise_for_status(200, (), b"{}")  # the positive twin: success passes
