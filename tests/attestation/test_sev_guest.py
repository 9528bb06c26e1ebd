"""Legacy /dev/sev-guest collection, against a fake device that plays the SNP firmware."""

from __future__ import annotations

import ctypes
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from attestation.configfs_tsm import CollectionError
from attestation.policy import Policy
from attestation.sev_guest import (
    SNP_GET_REPORT,
    OsSevGuestDevice,
    SnpGuestRequestIoctl,
    get_report,
)
from attestation.simulated import SimulatedTee
from attestation.snp_verify import verify_snp_report
from hushcc.errors import ProtocolError

NOW = datetime(2026, 11, 23, tzinfo=UTC)
MEAS = b"\x05" * 48


class FakeFirmware:
    """Reads the request through the ioctl's pointers and writes MSG_REPORT_RSP back."""

    def __init__(self, tee: SimulatedTee, *, status: int = 0, size: int = 1184,
                 fail: bool = False) -> None:
        self.tee, self.status, self.size, self.fail = tee, status, size, fail
        self.requests: list[tuple[bytes, int]] = []

    def ioctl(self, request: int, arg: SnpGuestRequestIoctl) -> None:
        assert request == SNP_GET_REPORT == 0xC0205300
        assert arg.msg_version == 1
        if self.fail:
            arg.exitinfo2 = 0x16
            raise OSError(5, "Input/output error")
        req = ctypes.string_at(arg.req_data, 96)
        user_data, vmpl = req[:64], struct.unpack_from("<I", req, 64)[0]
        self.requests.append((user_data, vmpl))
        report = self.tee.report(user_data, MEAS, vmpl=vmpl)
        resp = struct.pack("<II", self.status, self.size) + bytes(24) + report
        ctypes.memmove(arg.resp_data, resp, len(resp))


@pytest.fixture(scope="module")
def tee() -> SimulatedTee:
    return SimulatedTee.generate(now=NOW)


def test_get_report_verifies(tee: SimulatedTee) -> None:
    data = bytes(range(64))
    fw = FakeFirmware(tee)
    report = get_report(data, device=fw)
    assert fw.requests == [(data, 0)]
    _, steps = verify_snp_report(report, tee.certs(), trust=tee.trust(), policy=Policy(),
                                 now=NOW, expected_report_data=data)
    assert steps.passed


def test_vmpl_passed_through(tee: SimulatedTee) -> None:
    fw = FakeFirmware(tee)
    get_report(bytes(64), vmpl=2, device=fw)
    assert fw.requests == [(bytes(64), 2)]


@pytest.mark.parametrize(("fw_kwargs", "error"), [
    pytest.param({"status": 0x16}, CollectionError, id="firmware-status"),
    pytest.param({"size": 1000}, ProtocolError, id="wrong-size"),
    pytest.param({"fail": True}, CollectionError, id="ioctl-error"),
])
def test_failures(tee: SimulatedTee, fw_kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        get_report(bytes(64), device=FakeFirmware(tee, **fw_kwargs))


def test_no_device_and_bad_length(tmp_path: Path) -> None:
    with pytest.raises(CollectionError):
        get_report(bytes(64), device=OsSevGuestDevice(tmp_path / "sev-guest"))
    with pytest.raises(ProtocolError):
        get_report(bytes(32))
