"""The inner request and response of one call: OpenAI JSON inside binary HTTP (RFC 9292).

Pure: parameters and the clock's value in, bhttp bytes out; decoded bhttp in, result objects or
typed errors out. The envelope (HPKE, chunked OHTTP) is `client.session`'s business.

Invariants:
* Only the documented OpenAI fields are sent, type-checked here, so a typo fails on the
  client before any byte leaves it (`ProtocolError` naming the field, never its value).
* Every inner request carries a `Date` (RFC 9458 §6.5.1); a `date` problem answer exposes the
  gateway's `Date` for the single correction retry §6.5.2 allows (`DateCorrectionError`).
* Errors from inside the envelope become `APIStatusError` with the node's status and code; the
  node's messages carry no request content, and neither do ours.
"""

from __future__ import annotations

import json
import math
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from hushcc.errors import HushError, ProtocolError
from ohttp.bhttp import Request, encode_request
from ohttp.problems import DATE
from ohttp.replay import http_date

if TYPE_CHECKING:
    from datetime import datetime

    from ohttp.bhttp import Fields

CHAT_PATH = b"/v1/chat/completions"
MODELS_PATH = b"/v1/models"
# The inner request's authority: the node serves only its own API and forwards nothing (G15).
AUTHORITY = b"node.hushcc.invalid"
PROBLEM_MEDIA_TYPE = b"application/problem+json"

_OPTIONAL: dict[str, tuple[type, ...]] = {
    "max_tokens": (int,), "max_completion_tokens": (int,), "temperature": (int, float),
    "top_p": (int, float), "top_k": (int,), "seed": (int,), "stop": (str, list),
    "stream_options": (dict,), "cache_salt": (str,), "user": (str,), "n": (int,),
}


class APIStatusError(HushError):
    """The node answered with an error inside the envelope (OpenAI's error JSON)."""

    def __init__(self, status: int, code: str, kind: str) -> None:
        """Record the status, OpenAI `code` and `type` (never request content)."""
        super().__init__(f"node answered {status} ({kind}: {code})")
        self.status_code = status
        self.code = code
        self.type = kind


class DateCorrectionError(HushError):
    """The gateway refused our `Date`; `gateway_date` is its clock, for one retry (§6.5.2)."""

    def __init__(self, gateway_date: datetime) -> None:
        """Record the gateway's clock (a public value: it is in the response's Date field)."""
        super().__init__("the gateway refused the request's Date")
        self.gateway_date = gateway_date


def chat_body(model: str, messages: list[dict[str, str]], *, stream: bool,
              options: dict[str, Any]) -> bytes:
    """The JSON body of `POST /v1/chat/completions`, checked field by field.

    Raises:
        ProtocolError: an unknown option, or a value of the wrong type (named, never echoed).
    """
    if not isinstance(model, str) or not model:
        raise ProtocolError("model must be a non-empty string")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("messages must be a non-empty list")
    for message in messages:
        if (not isinstance(message, dict) or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)):
            raise ProtocolError("each message needs a string role and string content")
    doc: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    for name, value in options.items():
        if value is None:
            continue
        kinds = _OPTIONAL.get(name)
        if kinds is None:
            raise ProtocolError(f"unsupported parameter: {name}")
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ProtocolError(f"parameter {name} has the wrong type")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"parameter {name} is not a finite number")
        doc[name] = value
    return json.dumps(doc).encode()


def inner_request(method: bytes, path: bytes, body: bytes, *, now: datetime) -> bytes:
    """One inner request as known-length binary HTTP, with its `Date`."""
    headers: Fields = ((b"date", http_date(now).encode()),)
    if body:
        headers = ((b"content-type", b"application/json"), *headers)
    return encode_request(Request(method, b"https", AUTHORITY, path, headers, body))


def header(headers: Fields, name: bytes) -> bytes | None:
    """The first value of field `name` (case-insensitive), or None."""
    return next((v for k, v in headers if k.lower() == name), None)


def raise_for_status(status: int, headers: Fields, body: bytes) -> None:
    """Map an inner error answer to `DateCorrectionError` or `APIStatusError`; success passes.

    Raises:
        DateCorrectionError: a `date` problem (RFC 9458 §6.5.2) with a usable `Date`.
        APIStatusError: any other non-2xx answer.
    """
    if 200 <= status < 300:
        return
    content_type = header(headers, b"content-type") or b""
    if status == DATE.status and content_type.startswith(PROBLEM_MEDIA_TYPE):
        problem = _json(body)
        date = header(headers, b"date")
        if isinstance(problem, dict) and problem.get("type") == DATE.type and date:
            try:
                raise DateCorrectionError(parsedate_to_datetime(date.decode("ascii")))
            except (ValueError, TypeError, UnicodeDecodeError):
                pass
    error = _json(body)
    detail = error.get("error") if isinstance(error, dict) else None
    code = detail.get("code") if isinstance(detail, dict) else None
    kind = detail.get("type") if isinstance(detail, dict) else None
    raise APIStatusError(status, code if isinstance(code, str) else "unknown",
                         kind if isinstance(kind, str) else "unknown")


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def parse_json(body: bytes) -> object:
    """A success body's JSON.

    Raises:
        ProtocolError: not JSON.
    """
    value = _json(body)
    if value is None:
        raise ProtocolError("node answer is not JSON")
    return value
