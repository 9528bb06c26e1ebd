"""Legacy SEV-SNP collection through `/dev/sev-guest`: SNP_GET_REPORT, without configfs-tsm.

Linux uapi `include/uapi/linux/sev-guest.h`:

    struct snp_report_req { __u8 user_data[64]; __u32 vmpl; __u8 rsvd[28]; };      // 96 bytes
    struct snp_report_resp { __u8 data[4000]; };
    struct snp_guest_request_ioctl { __u8 msg_version; __u64 req_data; __u64 resp_data;
                                     union { __u64 exitinfo2; struct { __u32 fw_error;
                                     __u32 vmm_error; }; }; };                        // 32 bytes
    #define SNP_GET_REPORT _IOWR('S', 0x0, struct snp_guest_request_ioctl)            // 0xC0205300

The response data is the firmware's MSG_REPORT_RSP (SEV-SNP ABI spec): status u32, report_size
u32, 24 reserved bytes, then the report. This collector returns the report only; the VCEK then
comes from AMD's KDS (not fetched here), so prefer configfs-tsm, whose auxblob carries the chain.

The ioctl goes through one seam (`SevGuestDevice`) so tests can play the firmware.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from pathlib import Path
from typing import Protocol

from attestation.configfs_tsm import CollectionError
from attestation.sevsnp import REPORT_SIZE, SnpReport
from hushcc.errors import ProtocolError

DEVICE = Path("/dev/sev-guest")
MSG_VERSION = 1
_RESP_HEADER = 0x20


class SnpReportReq(ctypes.Structure):
    """`struct snp_report_req`."""

    _fields_ = (("user_data", ctypes.c_uint8 * 64), ("vmpl", ctypes.c_uint32),
                ("rsvd", ctypes.c_uint8 * 28))


class SnpReportResp(ctypes.Structure):
    """`struct snp_report_resp`."""

    _fields_ = (("data", ctypes.c_uint8 * 4000),)


class SnpGuestRequestIoctl(ctypes.Structure):
    """`struct snp_guest_request_ioctl` (natural alignment: 32 bytes)."""

    _fields_ = (("msg_version", ctypes.c_uint8), ("req_data", ctypes.c_uint64),
                ("resp_data", ctypes.c_uint64), ("exitinfo2", ctypes.c_uint64))


def _iowr(kind: str, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | number


SNP_GET_REPORT = _iowr("S", 0x0, ctypes.sizeof(SnpGuestRequestIoctl))


class SevGuestDevice(Protocol):
    """Issues one ioctl on the guest device; raises OSError as the kernel would."""

    def ioctl(self, request: int, arg: SnpGuestRequestIoctl) -> None:
        """Run `request` with `arg` (the kernel reads and writes through its pointers)."""


class OsSevGuestDevice:
    """The real `/dev/sev-guest`."""

    def __init__(self, path: Path = DEVICE) -> None:
        """Remember the device path (opened per request)."""
        self.path = path

    def ioctl(self, request: int, arg: SnpGuestRequestIoctl) -> None:
        """Open the device, issue the ioctl, close it."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.ioctl(fd, request, arg, True)  # noqa: FBT003 - fcntl's mutate_flag
        finally:
            os.close(fd)


def get_report(report_data: bytes, *, vmpl: int = 0, device: SevGuestDevice | None = None
               ) -> bytes:
    """Ask the SEV-SNP firmware for a report over `report_data` (SNP_GET_REPORT).

    Args:
        report_data: Exactly 64 bytes (the binding).
        vmpl: The VMPL to report (0 for the guest kernel's own).
        device: The ioctl seam (default: `/dev/sev-guest`).

    Returns:
        The 1184-byte report.

    Raises:
        ProtocolError: report_data is not 64 bytes, or the firmware returned a malformed report.
        CollectionError: No device, or the firmware refused (status / fw_error).
    """
    if len(report_data) != 64:
        raise ProtocolError("report_data must be 64 bytes")
    req = SnpReportReq(vmpl=vmpl)
    ctypes.memmove(req.user_data, report_data, 64)
    resp = SnpReportResp()
    arg = SnpGuestRequestIoctl(msg_version=MSG_VERSION, req_data=ctypes.addressof(req),
                               resp_data=ctypes.addressof(resp))
    try:
        (device or OsSevGuestDevice()).ioctl(SNP_GET_REPORT, arg)
    except OSError as exc:
        raise CollectionError(f"SNP_GET_REPORT failed (exitinfo2 {arg.exitinfo2:#x})") from exc
    data = bytes(resp.data)
    status, size = struct.unpack_from("<II", data)
    if status != 0:
        raise CollectionError(f"SEV-SNP firmware refused the report (status {status:#x})")
    if size != REPORT_SIZE:
        raise ProtocolError(f"SEV-SNP firmware returned a {size}-byte report")
    report = data[_RESP_HEADER:_RESP_HEADER + REPORT_SIZE]
    SnpReport.from_bytes(report)
    return report
