"""configfs-tsm collection against a directory that behaves like the kernel's report entry."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.configfs_tsm import (
    ARK_GUID,
    ASK_GUID,
    VCEK_GUID,
    CollectionError,
    build_cert_table,
    collect_cpu_evidence,
    collect_report,
    parse_cert_table,
)
from attestation.policy import Policy
from attestation.sevsnp import SnpReport
from attestation.simulated import SimulatedTee
from attestation.snp_verify import verify_snp_report
from hushcc.errors import ProtocolError
from tests.attestation.tsm_fake import MEAS, FakeKernel

NOW = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.fixture(scope="module")
def tee() -> SimulatedTee:
    return SimulatedTee.generate(now=NOW)


def test_collects_and_verifies(tmp_path: Path, tee: SimulatedTee) -> None:
    kernel = FakeKernel(tee)
    data = bytes(range(64))
    evidence = collect_cpu_evidence(data, root=tmp_path, fs=kernel)
    assert evidence.type == "sev-snp"
    assert evidence.certs == tee.certs()
    report, steps = verify_snp_report(evidence.evidence, evidence.certs, trust=tee.trust(),
                                      policy=Policy(), now=NOW, expected_report_data=data)
    assert steps.passed
    assert report.measurement == MEAS
    assert not (tmp_path / "hushcc").exists()  # the entry is removed afterwards


def test_generation_changed_once_is_retried(tmp_path: Path, tee: SimulatedTee) -> None:
    kernel = FakeKernel(tee)
    kernel.interfere = 1
    data = b"\x01" * 64
    report = collect_report(data, root=tmp_path, fs=kernel)
    assert report.generation == 3  # ours, theirs, ours again
    assert SnpReport.from_bytes(report.outblob).report_data == data


def test_generation_keeps_changing_fails(tmp_path: Path, tee: SimulatedTee) -> None:
    kernel = FakeKernel(tee)
    kernel.interfere = 10
    with pytest.raises(CollectionError, match="generation"):
        collect_report(b"\x01" * 64, root=tmp_path, fs=kernel, attempts=3)
    assert not (tmp_path / "hushcc").exists()


def test_without_interference_one_attempt_suffices(tmp_path: Path, tee: SimulatedTee) -> None:
    kernel = FakeKernel(tee)
    assert collect_report(b"\x01" * 64, root=tmp_path, fs=kernel, attempts=1).generation == 1


def test_no_configfs(tmp_path: Path, tee: SimulatedTee) -> None:
    with pytest.raises(CollectionError):
        collect_report(b"\x00" * 64, root=tmp_path / "absent", fs=FakeKernel(tee))


def test_wrong_report_data_length(tmp_path: Path, tee: SimulatedTee) -> None:
    with pytest.raises(ProtocolError):
        collect_report(b"\x00" * 32, root=tmp_path, fs=FakeKernel(tee))


def test_tdx_provider_and_unknown_provider(tmp_path: Path, tee: SimulatedTee) -> None:
    evidence = collect_cpu_evidence(b"\x00" * 64, root=tmp_path, fs=FakeKernel(tee, "tdx_guest"))
    assert evidence.type == "tdx"
    with pytest.raises(CollectionError, match="provider"):
        collect_cpu_evidence(b"\x00" * 64, root=tmp_path, fs=FakeKernel(tee, "arm_cca"))


def test_absent_auxblob_gives_no_certs(tmp_path: Path, tee: SimulatedTee) -> None:
    evidence = collect_cpu_evidence(b"\x00" * 64, root=tmp_path, fs=FakeKernel(tee, aux=False))
    assert evidence.certs == ()


def test_cert_table_round_trip_and_errors(tee: SimulatedTee) -> None:
    vcek, ask, ark = tee.certs()
    certs = {VCEK_GUID: vcek, ASK_GUID: ask, ARK_GUID: ark}
    blob = build_cert_table(certs)
    assert parse_cert_table(blob) == certs
    with pytest.raises(ProtocolError):
        parse_cert_table(blob[:30])  # unterminated
    bad = bytearray(blob)
    bad[16:20] = (len(blob) + 1).to_bytes(4, "little")  # offset outside the blob
    with pytest.raises(ProtocolError):
        parse_cert_table(bytes(bad))
    assert VCEK_GUID.bytes == bytes.fromhex("63da758de6644564adc5f4b93be8accd")


@given(st.binary(max_size=300))
@settings(max_examples=150)
def test_fuzz_cert_table(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_cert_table(data)
