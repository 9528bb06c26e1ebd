"""RFC 9457 problem details with the RFC 9458 problem types (§5.3 `ohttp-key`, §6.5.2 `date`).

Pure: the current time is a parameter. Problems carry no detail about the request.

* `ohttp-key` is sent by the gateway *outside* the encapsulation, before any decryption, as
  422 Unprocessable Content: the request is well-formed but names a key the gateway does not hold
  (unknown or rotated out; RFC 9458 §5.3 lets the gateway choose the code, its example shows 400;
  this project answers 422 everywhere, SECURITY.md G6/K5). `OHTTP_KEY` is the one source of it.
* `date` is sent *inside* an Encapsulated Response, as a binary HTTP response, with the gateway's
  `Date` (so the client can correct its clock and retry once with a new context) and
  `Cache-Control: no-store`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ohttp.bhttp import Response
from ohttp.replay import http_date

if TYPE_CHECKING:
    from datetime import datetime

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://iana.org/assignments/http-problem-types#"


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem type, its title and its status code."""

    type: str
    title: str
    status: int = 400

    def body(self) -> bytes:
        """The `application/problem+json` body (RFC 9457 §3)."""
        return json.dumps({"type": self.type, "title": self.title}).encode()

    def headers(self, now: datetime) -> tuple[tuple[bytes, bytes], ...]:
        """Response header fields: media type, `Date`, and `Cache-Control: no-store`."""
        return (
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"date", http_date(now).encode()),
            (b"cache-control", b"no-store"),
        )

    def to_response(self, now: datetime) -> Response:
        """The problem as a binary HTTP response (for use inside an Encapsulated Response)."""
        return Response(self.status, self.headers(now), self.body())


OHTTP_KEY = Problem(PROBLEM_TYPE_BASE + "ohttp-key", "key identifier unknown", status=422)
DATE = Problem(PROBLEM_TYPE_BASE + "date", "date field in request outside of acceptable range")
