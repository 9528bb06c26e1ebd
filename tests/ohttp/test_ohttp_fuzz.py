"""Fuzz every ohttp parser: only ProtocolError / DecryptError may escape (STYLE.md §7, G8, C4).

Hypothesis drives arbitrary bytes and mutations of valid seeds, fed whole and in pieces, and small
units repeated to 16 MB (`REPEATED`: bounded work, not only no crash); a short bounded atheris
(libFuzzer) run of the same parsers runs in a subprocess (it exits the process). The repetitions
stay out of atheris: instrumented, each costs seconds and the short run would time out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ohttp import bhttp, bhttp_stream, varint
from tests.ohttp.ohttp_parsers import PARSERS, REPEATED, repeated, run

NAMES = sorted(PARSERS)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[pos % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.mark.parametrize("name", NAMES)
def test_seed_parses(name: str) -> None:
    assert run(name, PARSERS[name][1])  # positive twin: the seed is accepted


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150)
@given(data=st.binary(max_size=300), step=st.integers(1, 64))
def test_arbitrary_bytes(name: str, data: bytes, step: int) -> None:
    run(name, data, step)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150)
@given(st.data(), st.integers(1, 64))
def test_mutated_seeds(name: str, data: st.DataObject, step: int) -> None:
    seed = PARSERS[name][1]
    run(name, data.draw(mutated(seed)), step)


@pytest.mark.parametrize("name", NAMES)
def test_every_prefix_whole_and_byte_at_a_time(name: str) -> None:
    seed = PARSERS[name][1]
    results = [run(name, seed[:n]) for n in range(len(seed))]
    assert run(name, seed, 1)
    if name not in {"key_file", "bhttp_request", "bhttp_response", "bhttp_stream"}:
        assert not any(results), "a strict prefix of an encapsulated message was accepted"


@pytest.mark.parametrize("name", sorted(REPEATED))
@settings(max_examples=4, deadline=None)
@given(unit=st.binary(min_size=1, max_size=4))
@example(unit=b"\x01x")  # 16 MB of 1-byte chunks: 14.7 s of CPU before the chunk cap
@example(unit=b"\x00")  # 16 MB of zero padding: decodes
def test_sixteen_megabytes_of_a_repeated_unit_decode_or_are_refused_in_bounded_work(
    name: str, unit: bytes
) -> None:
    reads: list[int] = []

    def counted(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
        reads.append(offset)
        return varint.decode_varint(data, offset)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bhttp, "decode_varint", counted)
        patch.setattr(bhttp_stream, "decode_varint", counted)
        run(name, repeated(name, unit, 16 << 20), 1 << 16)
    # Work is bounded by the caps, not by the size: every loop iteration reads one integer.
    assert len(reads) <= bhttp.Limits().max_chunks + 256


def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    harness = Path(__file__).with_name("atheris_ohttp.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                                       *sys.path]))
    proc = subprocess.run(
        [sys.executable, str(harness), "-runs=10000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 10000 runs" in proc.stderr
