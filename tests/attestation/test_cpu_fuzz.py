"""Fuzzing the CPU-side evidence parsers and the SNP verifier (SECURITY.md A9).

Invariant: a value, or `ProtocolError` / `VerificationError`; nothing else escapes. Hypothesis
drives it in the suite; run as a script this module is an atheris (libFuzzer) harness:

    python tests/attestation/test_cpu_fuzz.py -runs=1000000     # nightly-length run
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.bundle import Bundle
from attestation.configfs_tsm import parse_cert_table
from attestation.policy import Policy
from attestation.sevsnp import SnpReport, blank_report
from attestation.simulated import SimulatedTee
from attestation.snp_verify import verify_snp_report
from attestation.vcek import parse_vcek
from hushcc.errors import ProtocolError, VerificationError

TYPED = (ProtocolError, VerificationError)
NOW = datetime(2026, 11, 23, tzinfo=UTC)
_TEE = SimulatedTee.generate(now=NOW)
SEED_REPORT = _TEE.report(b"\x01" * 64, b"\x02" * 48)
SEED_VCEK = _TEE.certs()[0]


def _verify(data: bytes) -> None:
    verify_snp_report(data, _TEE.certs(), trust=_TEE.trust(), policy=Policy(), now=NOW)


PARSERS = {
    "snp_report": SnpReport.from_bytes,
    "vcek": parse_vcek,
    "bundle": Bundle.from_json,
    "cert_table": parse_cert_table,
    "snp_verify": _verify,
}
SEEDS = {"snp_report": SEED_REPORT, "vcek": SEED_VCEK, "bundle": b'{"version":1}',
         "cert_table": bytes(24), "snp_verify": SEED_REPORT}
NAMES = sorted(PARSERS)


def run(name: str, data: bytes) -> None:
    """The fuzz invariant."""
    with contextlib.suppress(*TYPED):
        PARSERS[name](data)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@settings(max_examples=60)
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    blob = bytearray(SEEDS[name])
    for _ in range(data.draw(st.integers(0, 3))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    run(name, bytes(blob[: data.draw(st.integers(0, len(blob)))]))


def test_seeds_are_valid() -> None:
    assert SnpReport.from_bytes(SEED_REPORT).to_bytes() == SEED_REPORT
    assert parse_vcek(SEED_VCEK).hwid == _TEE.chip_id
    _verify(SEED_REPORT)  # the verifier's twin: the unmutated seed verifies
    assert blank_report(2).version == 2


def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), *sys.path]))
    proc = subprocess.run(
        [sys.executable, __file__, "-runs=3000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 3000 runs" in proc.stderr


def _atheris_main() -> None:
    import atheris  # noqa: PLC0415

    def one_input(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        name = NAMES[provider.ConsumeIntInRange(0, len(NAMES) - 1)]
        body = provider.ConsumeBytes(provider.remaining_bytes())
        if len(body) % 5 == 0:  # steer toward valid structure sometimes
            seed = bytearray(SEEDS[name])
            for i, b in enumerate(body[:16]):
                seed[(i * 97 + b) % len(seed)] ^= b
            body = bytes(seed)
        run(name, body)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
