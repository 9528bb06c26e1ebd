"""atheris harness over every ohttp parser (run by test_ohttp_fuzz.py, or by hand for longer).

    python tests/ohttp/atheris_ohttp.py -runs=1000000      # nightly-length run

Invariant: value or ProtocolError/DecryptError; anything else is reported by libFuzzer as a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tests.ohttp.ohttp_parsers import PARSERS, run

NAMES = sorted(PARSERS)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    name = NAMES[provider.ConsumeIntInRange(0, len(NAMES) - 1)]
    step = provider.ConsumeIntInRange(1, 64)
    body = provider.ConsumeBytes(provider.remaining_bytes())
    if provider.remaining_bytes() == 0 and len(body) % 7 == 0:
        body = PARSERS[name][1][: len(body)] + body  # steer toward valid structure sometimes
    run(name, body, step)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
