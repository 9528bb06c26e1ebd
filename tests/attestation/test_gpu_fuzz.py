"""Fuzzing the GPU and TDX evidence parsers (SECURITY.md A9): only our typed errors escape.

Hypothesis drives arbitrary bytes, single-byte mutations and truncations of the real samples,
and an SPDM round-trip; the same module is an atheris (libFuzzer) harness when run as a script:

    python tests/attestation/test_gpu_fuzz.py -runs=1000000     # nightly-length run
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.gpu import GpuPolicy, verify_gpu_evidence
from attestation.gpu.nvml import chain_to_der
from attestation.gpu.rim import Rim
from attestation.gpu.simulated import SimulatedGpu
from attestation.gpu.spdm import GpuEvidence, MeasurementBlock, build_evidence
from attestation.gpu.xmldsig import verify_enveloped
from attestation.report import AttestationError
from attestation.tdx_quote import TdxQuote
from hushcc.errors import ProtocolError, VerificationError

TYPED = (ProtocolError, VerificationError)
PARSERS = {
    "spdm": GpuEvidence.from_bytes,
    "rim": Rim.from_bytes,
    "xmldsig": verify_enveloped,
    "tdx": TdxQuote.from_bytes,
    "chain": chain_to_der,
}
REPO = Path(__file__).resolve().parents[2]


def run(name: str, data: bytes) -> None:
    """The fuzz invariant: a value, or one of our typed errors — nothing else."""
    with contextlib.suppress(*TYPED):
        PARSERS[name](data)


def _sample(shared: Path, name: str) -> bytes:
    h100 = shared / "attestation" / "nvidia_h100" / "nvtrust_initial_test_no_gpu"
    if name == "spdm":
        return bytes.fromhex((h100 / "attestationReport.txt").read_text().strip())
    if name in {"rim", "xmldsig"}:
        return (h100 / "Driver_RIM_test_no_gpu.swidtag").read_bytes()
    if name == "chain":
        return (h100 / "gpuAkCertChain.txt").read_bytes()
    return (shared / "attestation" / "intel_tdx" / "quote_v5_sample.dat").read_bytes()


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=150)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    run(name, data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=120)
@given(data=st.data())
def test_mutated_and_truncated_samples(
    shared_vectors: Path, name: str, data: st.DataObject
) -> None:
    raw = bytearray(_sample(shared_vectors, name))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    run(name, bytes(raw[:cut]))
    run(name, bytes(raw))


def test_real_samples_parse(shared_vectors: Path) -> None:
    for name, parse in PARSERS.items():
        assert parse(_sample(shared_vectors, name)) is not None


_KEY = ec.generate_private_key(ec.SECP384R1())
_SIM = SimulatedGpu()
_NONCE = b"\x11" * 32
_EVIDENCE, _CERTS = _SIM.attest(_NONCE)
_POLICY = GpuPolicy(reference_measurements=_SIM.reference_measurements())
_NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


@settings(max_examples=150)
@given(data=st.data())
def test_verifier_mutations_only_attestation_error(data: st.DataObject) -> None:
    """Mutate one byte of the evidence or of one certificate: rejected, typed, never crashes."""
    which = data.draw(st.integers(-1, len(_CERTS) - 1))
    target = bytearray(_EVIDENCE if which < 0 else _CERTS[which])
    pos = data.draw(st.integers(0, len(target) - 1))
    target[pos] ^= data.draw(st.integers(1, 255))
    evidence = bytes(target) if which < 0 else _EVIDENCE
    certs = list(_CERTS)
    if which >= 0:
        certs[which] = bytes(target)
    with pytest.raises(AttestationError):
        verify_gpu_evidence(
            evidence, certs, expected_nonce=_NONCE, policy=_POLICY, now=_NOW, allow_simulated=True
        )


def test_verifier_unmutated_twin_passes() -> None:
    report = verify_gpu_evidence(
        _EVIDENCE, _CERTS, expected_nonce=_NONCE, policy=_POLICY, now=_NOW, allow_simulated=True
    )
    assert report.passed


@settings(max_examples=60)
@given(
    blocks=st.lists(
        st.tuples(st.integers(1, 254), st.integers(0, 255), st.binary(max_size=64)),
        max_size=12,
        unique_by=lambda b: b[0],
    ),
    opaque=st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=8),
    nonce=st.binary(min_size=32, max_size=32),
)
def test_spdm_round_trip(
    blocks: list[tuple[int, int, bytes]], opaque: list[tuple[int, bytes]], nonce: bytes
) -> None:
    mblocks = tuple(MeasurementBlock(i, 1, t, v) for i, t, v in blocks)
    evidence = build_evidence(
        nonce=nonce, blocks=mblocks, responder_nonce=bytes(32), opaque=tuple(opaque), sign=_KEY
    )
    parsed = GpuEvidence.from_bytes(evidence)
    assert parsed.to_bytes() == evidence
    assert parsed.blocks == mblocks
    assert parsed.request_nonce == nonce


def test_spdm_rejects_trailing_and_bad_block_sizes() -> None:
    evidence = build_evidence(
        nonce=bytes(32),
        blocks=(MeasurementBlock(1, 1, 1, bytes(48)),),
        responder_nonce=bytes(32),
        opaque=(),
        sign=_KEY,
    )
    assert GpuEvidence.from_bytes(evidence).to_bytes() == evidence  # positive twin
    with pytest.raises(ProtocolError):
        GpuEvidence.from_bytes(evidence + b"\x00")
    bad = bytearray(evidence)
    struct.pack_into("<H", bad, 37 + 8 + 2, 99)  # block size field no longer 3 + value size
    with pytest.raises(ProtocolError):
        GpuEvidence.from_bytes(bytes(bad))


def test_atheris_short_run(tmp_path: Path, shared_vectors: Path) -> None:
    pytest.importorskip("atheris")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]),
        HUSHCC_SHARED_VECTORS=str(shared_vectors),
    )
    proc = subprocess.run(
        [sys.executable, __file__, "-runs=3000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 3000 runs" in proc.stderr


def _atheris_main() -> None:
    import atheris  # noqa: PLC0415 - only in the harness process

    # re-import our parsers instrumented (only them: instrumenting everything takes a minute)
    with atheris.instrument_imports(include=["attestation"]):
        for mod in ("gpu.spdm", "x509chain", "gpu.xmldsig", "gpu.rim", "gpu.nvml", "tdx_quote"):
            importlib.reload(sys.modules[f"attestation.{mod}"])
    gpu = sys.modules
    PARSERS.update(
        spdm=gpu["attestation.gpu.spdm"].GpuEvidence.from_bytes,
        rim=gpu["attestation.gpu.rim"].Rim.from_bytes,
        xmldsig=gpu["attestation.gpu.xmldsig"].verify_enveloped,
        tdx=gpu["attestation.tdx_quote"].TdxQuote.from_bytes,
        chain=gpu["attestation.gpu.nvml"].chain_to_der,
    )
    names = sorted(PARSERS)
    vectors = Path(os.environ.get("HUSHCC_SHARED_VECTORS", REPO.parent / "shared" / "vectors"))
    seeds = {n: _sample(vectors, n) for n in names}

    def one_input(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        name = names[provider.ConsumeIntInRange(0, len(names) - 1)]
        mode = provider.ConsumeIntInRange(0, 2)
        body = provider.ConsumeBytes(provider.remaining_bytes())
        if mode == 1 and body:  # mutate the real sample at fuzzer-chosen positions
            seed = bytearray(seeds[name])
            for i in range(0, len(body) - 2, 3):
                seed[int.from_bytes(body[i : i + 2], "big") % len(seed)] = body[i + 2]
            body = bytes(seed)
        elif mode == 2:  # truncation of the real sample
            body = seeds[name][: int.from_bytes(body[:2] or b"\0", "big") % len(seeds[name])]
        run(name, body)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
