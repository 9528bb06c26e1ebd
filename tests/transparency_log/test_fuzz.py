"""Fuzzing the transparency-log parsers: a value or one of our typed errors, nothing else.

Hypothesis drives arbitrary bytes plus byte mutations and truncations of valid samples; the same
module is an atheris (libFuzzer) harness when run as a script:

    python tests/transparency_log/test_fuzz.py -runs=1000000
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError, VerificationError
from transparency_log.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from transparency_log.cosignature import CosignatureVerifier, Cosigner, WitnessPolicy
from transparency_log.entry import ReleaseEntry, sign_entry, verify_signed_entry
from transparency_log.note import Note, Signer, Verifier
from transparency_log.storage import parse_records, record
from transparency_log.tiles import Tile, decode_bundle, encode_bundle

if TYPE_CHECKING:
    from collections.abc import Callable

TYPED = (ProtocolError, VerificationError)
REPO = Path(__file__).resolve().parents[2]
_LOG = Signer.generate("fuzz.log")
_REL = Signer.generate("fuzz.release")
_WITNESS = Cosigner.generate("fuzz.witness")
_POLICY = WitnessPolicy((_WITNESS.verifier(),), 1)
_ENTRY = ReleaseEntry.from_value({
    "schema": "hushcc.release/v1", "image": {"digest": "sha256:00"},
    "measurements": {"sim": "ab"}, "model": {"name": "m"}, "source": {"commit": "c"},
})
_NOTE = _WITNESS.cosign(sign_checkpoint(Checkpoint("fuzz.log", 3, b"\x01" * 32), _LOG), 1000)


def _text(parse: Callable[[str], object]) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("not UTF-8") from exc
        return parse(text)
    return run


PARSERS: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "note": (Note.from_bytes, _NOTE),
    "checkpoint": (Checkpoint.from_bytes, Note.from_bytes(_NOTE).text),
    "open_checkpoint": (lambda d: open_checkpoint(d, _LOG.verifier(), "fuzz.log"), _NOTE),
    "witness_policy": (_POLICY.verify, _NOTE),
    "tile_path": (_text(Tile.from_path), b"tile/1/x001/234.p/5"),
    "bundle": (decode_bundle, encode_bundle([b"abc", b"", b"de"])),
    "entry": (ReleaseEntry.from_bytes, _ENTRY.to_bytes()),
    "signed_entry": (lambda d: verify_signed_entry(d, _REL.verifier()), sign_entry(_ENTRY, _REL)),
    "vkey": (_text(Verifier.from_string), _LOG.verifier().to_string().encode()),
    "cosig_vkey": (_text(CosignatureVerifier.from_string),
                   _WITNESS.verifier().to_string().encode()),
    "signer_key": (_text(Signer.from_string), _LOG.to_string().encode()),
    "log_records": (parse_records, record(b"E", b"x") + record(b"C", _NOTE)),
}


def run(name: str, data: bytes) -> None:
    """The fuzz invariant: a value, or one of our typed errors - nothing else."""
    with contextlib.suppress(*TYPED):
        PARSERS[name][0](data)


def test_samples_parse() -> None:
    for name, (parse, sample) in PARSERS.items():
        assert parse(sample) is not None, name  # positive twin of every fuzz target


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=100)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    run(name, data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=100)
@given(data=st.data())
def test_mutated_and_truncated_samples(name: str, data: st.DataObject) -> None:
    raw = bytearray(PARSERS[name][1])
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    run(name, bytes(raw[:cut]))
    run(name, bytes(raw))


@pytest.mark.slow
def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    proc = subprocess.run(
        [sys.executable, __file__, "-runs=3000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 3000 runs" in proc.stderr


def _atheris_main() -> None:
    import atheris  # noqa: PLC0415 - only in the harness process

    names = sorted(PARSERS)

    def one_input(data: bytes) -> None:
        if not data:
            return
        run(names[data[0] % len(names)], data[1:])

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
