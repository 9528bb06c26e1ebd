"""Fuzz every token parser: only ProtocolError may escape (STYLE.md §7, A9-style invariant).

Hypothesis drives arbitrary bytes and mutations of valid seeds; a short bounded atheris run of
the same harness runs in a subprocess (libFuzzer exits its process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ohttp.test_ohttp_fuzz import mutated
from tests.relay.token_parsers import PARSERS, run

NAMES = sorted(PARSERS)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", NAMES)
def test_seed_parses(name: str) -> None:
    assert run(name, PARSERS[name][1])  # positive twin: the seed is accepted


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=100)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    run(name, data)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=100)
@given(st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    run(name, data.draw(mutated(PARSERS[name][1])))


@pytest.mark.parametrize("name", ["token_challenge", "token_request", "token", "token_key"])
def test_no_strict_prefix_is_accepted(name: str) -> None:
    seed = PARSERS[name][1]
    assert not any(run(name, seed[:n]) for n in range(len(seed)))


def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    harness = Path(__file__).with_name("atheris_tokens.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    proc = subprocess.run(
        [sys.executable, str(harness), "-runs=5000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 5000 runs" in proc.stderr
