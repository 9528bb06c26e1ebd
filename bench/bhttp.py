"""Benchmark: binary HTTP decoding of 16 MB adversarial and large valid messages (CPU seconds).

    .venv/bin/python bench/bhttp.py

Rows: a 16 MB indeterminate-length request of 1-byte content chunks (issue 9 item 10: 14.7 s of
CPU before the chunk cap; now refused by `Limits.max_chunks`), the same streamed as a response
in 64 KiB pieces, and the valid messages nearest the cap: 65,536 chunks of 250 bytes, whole and
streamed; and the first row with the cap lifted, for the cost the cap saves. CPU time of one
decode each (time.process_time), best of 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Named like nothing it imports, but keep its folder off the path as bench/ohttp.py does.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import platform  # noqa: E402
import time  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from hushcc.errors import ProtocolError  # noqa: E402
from ohttp import bhttp  # noqa: E402
from ohttp.bhttp_stream import ResponseStreamDecoder  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

REQUEST_HEAD = b"\x02\x03GET\x05https\x00\x01/\x00"
RESPONSE_HEAD = b"\x03\x40\xc8\x00"
ONE_BYTE = b"\x01x" * ((16 << 20) // 2 - 16)
AT_CAP = (b"\x40\xfa" + b"y" * 250) * bhttp.Limits().max_chunks


def _uncapped(data: bytes) -> object:
    return bhttp.decode_request(data, limits=bhttp.Limits(max_chunks=1 << 62))


def _stream(data: bytes) -> object:
    decoder = ResponseStreamDecoder()
    events: list[object] = []
    for i in range(0, len(data), 1 << 16):
        events += decoder.feed(data[i : i + (1 << 16)])
    return events + decoder.finish()


def measure(decode: Callable[[bytes], object], data: bytes) -> tuple[str, float]:
    best, outcome = float("inf"), ""
    for _ in range(3):
        start = time.process_time()
        try:
            decode(data)
            outcome = "decoded"
        except ProtocolError as exc:
            outcome = f"refused: {exc}"
        best = min(best, time.process_time() - start)
    return outcome, best


def main() -> None:
    cases = [
        ("request, 1-byte chunks", bhttp.decode_request, REQUEST_HEAD + ONE_BYTE + b"\x00\x00"),
        ("same, chunk cap lifted (as before)", _uncapped, REQUEST_HEAD + ONE_BYTE + b"\x00\x00"),
        ("response stream, 1-byte chunks", _stream, RESPONSE_HEAD + ONE_BYTE + b"\x00\x00"),
        ("request, 65,536 x 250 B chunks", bhttp.decode_request, REQUEST_HEAD + AT_CAP + b"\0\0"),
        ("response stream, 65,536 x 250 B", _stream, RESPONSE_HEAD + AT_CAP + b"\x00\x00"),
    ]
    print(f"# bhttp decode bench: Python {platform.python_version()}, {platform.machine()}")
    print("| message | bytes | outcome | CPU s |")
    print("|---|---:|---|---:|")
    for name, decode, data in cases:
        outcome, seconds = measure(decode, data)
        print(f"| {name} | {len(data):,} | {outcome} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
