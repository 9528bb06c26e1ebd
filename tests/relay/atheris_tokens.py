"""atheris harness over every token parser (run by test_token_fuzz.py, or by hand for longer).

    python tests/relay/atheris_tokens.py -runs=1000000      # nightly-length run

Invariant: value or ProtocolError; anything else is reported by libFuzzer as a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tests.relay.token_parsers import PARSERS, run

NAMES = sorted(PARSERS)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    name = NAMES[provider.ConsumeIntInRange(0, len(NAMES) - 1)]
    body = provider.ConsumeBytes(provider.remaining_bytes())
    if len(body) % 5 == 0:
        body = PARSERS[name][1][: len(body)] + body  # steer toward valid structure sometimes
    run(name, body)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
