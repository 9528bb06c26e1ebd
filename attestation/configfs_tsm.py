"""Collect CPU evidence through Linux configfs-tsm (SEV-SNP and TDX guests).

Kernel ABI (Documentation/ABI/testing/configfs-tsm): a report entry is a directory created with
`mkdir /sys/kernel/config/tsm/report/NAME`, holding `inblob` (write: up to 64 bytes of report
data), `outblob` (read: the report or quote), `auxblob` (read: SEV-SNP certificate table, may be
absent or empty), `provider` (read: `sev_guest` or `tdx_guest`) and `generation` (read: a counter
that every write to the entry increments). Several processes may share an entry, so a reader
checks that `generation` is exactly one more after its `inblob` write than before it, and still
so after reading every output; otherwise someone else wrote in between and the outputs may not
be for our inblob: retry, then fail.

The auxblob of SEV-SNP is the extended guest request certificate table (SEV-SNP GHCB spec, and
go-sev-guest `abi.ParseSnpCertTableHeader`): entries of {GUID (16 bytes, RFC 4122 byte order),
offset u32 LE, length u32 LE}, ended by an all-zero entry; each names a DER certificate in the
same blob (VCEK, ASK, ARK).

I/O goes through `TsmFileSystem` (one seam), so tests run the collector against a directory
that behaves like configfs-tsm. Without certificates from the host, the VCEK has to come from
AMD's KDS (not fetched here: the bundle then carries none and verification fails closed).
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from attestation.bundle import Evidence
from attestation.sevsnp import SnpReport
from hushcc.errors import HushError, ProtocolError

DEFAULT_ROOT = Path("/sys/kernel/config/tsm/report")
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
_ENTRY = struct.Struct("<16sII")
_MAX_ENTRIES = 64


class CollectionError(HushError):
    """Evidence could not be collected (no TEE, a provider we do not handle, a busy entry)."""


class TsmFileSystem(Protocol):
    """The file operations the collector needs (the real one is `OsTsmFileSystem`)."""

    def mkdir(self, path: Path) -> None:
        """Create a report entry directory."""

    def rmdir(self, path: Path) -> None:
        """Remove a report entry directory."""

    def write(self, path: Path, data: bytes) -> None:
        """Write a whole attribute."""

    def read(self, path: Path) -> bytes | None:
        """Read a whole attribute; None when it does not exist."""


class OsTsmFileSystem:
    """configfs through ordinary file calls."""

    def mkdir(self, path: Path) -> None:
        """Create a report entry directory."""
        path.mkdir()

    def rmdir(self, path: Path) -> None:
        """Remove a report entry directory."""
        path.rmdir()

    def write(self, path: Path, data: bytes) -> None:
        """Write a whole attribute with one write call (configfs binary attributes)."""
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.write(fd, data) != len(data):
                raise CollectionError(f"short write to {path.name}")
        finally:
            os.close(fd)

    def read(self, path: Path) -> bytes | None:
        """Read a whole attribute; None when it does not exist."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None


@dataclass(frozen=True, slots=True)
class TsmReport:
    """What one configfs-tsm report entry returned."""

    provider: str
    outblob: bytes
    auxblob: bytes
    generation: int


def _generation(fs: TsmFileSystem, entry: Path) -> int:
    raw = fs.read(entry / "generation")
    try:
        return int((raw or b"").strip())
    except ValueError as exc:
        raise CollectionError("configfs-tsm generation is not a number") from exc


def _attempt(fs: TsmFileSystem, entry: Path, report_data: bytes) -> TsmReport | None:
    before = _generation(fs, entry)
    fs.write(entry / "inblob", report_data)
    outblob = fs.read(entry / "outblob")
    auxblob = fs.read(entry / "auxblob") or b""
    provider = (fs.read(entry / "provider") or b"").decode("ascii", "replace").strip()
    after = _generation(fs, entry)
    if after != before + 1:
        return None  # another writer touched the entry: our outputs may not be for our inblob
    if not outblob:
        raise CollectionError("configfs-tsm returned no report")
    return TsmReport(provider, outblob, auxblob, after)


def collect_report(
    report_data: bytes, *, root: Path = DEFAULT_ROOT, name: str = "hushcc",
    fs: TsmFileSystem | None = None, attempts: int = 3,
) -> TsmReport:
    """Ask the TSM for a report over `report_data`, checking the generation counter.

    Args:
        report_data: Exactly 64 bytes (the binding).
        root: The configfs-tsm report directory.
        name: The entry name to create under `root` (removed afterwards).
        fs: File operations (default: the real file system).
        attempts: How many times to retry when another writer interferes.

    Returns:
        The report entry's outputs.

    Raises:
        CollectionError: No configfs-tsm, the entry exists already, or the generation kept
            changing under us.
        ProtocolError: report_data is not 64 bytes.
    """
    if len(report_data) != 64:
        raise ProtocolError("report_data must be 64 bytes")
    ops = fs or OsTsmFileSystem()
    entry = root / name
    try:
        ops.mkdir(entry)
    except OSError as exc:
        raise CollectionError(f"cannot create configfs-tsm entry {entry}") from exc
    try:
        for _ in range(attempts):
            result = _attempt(ops, entry, report_data)
            if result is not None:
                return result
        raise CollectionError("configfs-tsm entry kept changing under us (generation)")
    finally:
        ops.rmdir(entry)


def parse_cert_table(auxblob: bytes) -> dict[uuid.UUID, bytes]:
    """Parse the SEV-SNP extended-report certificate table (module docstring).

    Args:
        auxblob: The table and the certificates it points into.

    Returns:
        GUID -> certificate bytes.

    Raises:
        ProtocolError: Truncated, unterminated, or an entry points outside the blob.
    """
    entries: list[tuple[bytes, int, int]] = []
    for i in range(_MAX_ENTRIES):
        start = i * _ENTRY.size
        if start + _ENTRY.size > len(auxblob):
            raise ProtocolError("certificate table is not terminated")
        guid, offset, length = _ENTRY.unpack_from(auxblob, start)
        if guid == bytes(16) and offset == 0 and length == 0:
            header = start + _ENTRY.size
            break
        entries.append((guid, offset, length))
    else:
        raise ProtocolError("certificate table has too many entries")
    out: dict[uuid.UUID, bytes] = {}
    for guid, offset, length in entries:
        if offset < header or offset + length > len(auxblob):
            raise ProtocolError("certificate table entry points outside the certificates")
        out[uuid.UUID(bytes=guid)] = auxblob[offset:offset + length]
    return out


def build_cert_table(certs: dict[uuid.UUID, bytes]) -> bytes:
    """Encode a certificate table (inverse of `parse_cert_table`; for tests and the simulator)."""
    header = _ENTRY.size * (len(certs) + 1)
    table, blobs, offset = [], [], header
    for guid, der in certs.items():
        table.append(_ENTRY.pack(guid.bytes, offset, len(der)))
        blobs.append(der)
        offset += len(der)
    return b"".join([*table, bytes(_ENTRY.size), *blobs])


def collect_cpu_evidence(
    report_data: bytes, *, root: Path = DEFAULT_ROOT, name: str = "hushcc",
    fs: TsmFileSystem | None = None, attempts: int = 3,
) -> Evidence:
    """Collect this guest's CPU evidence for the bundle (`sev-snp` or `tdx`).

    Args:
        report_data: The 64-byte binding.
        root: The configfs-tsm report directory.
        name: The entry name to create.
        fs: File operations (default: the real file system).
        attempts: Retries when another writer interferes.

    Returns:
        The bundle's `cpu` evidence: an SEV-SNP report with VCEK, ASK, ARK from the host's
        certificate table (those present), or a TDX quote.

    Raises:
        CollectionError: No TEE, or an unknown provider.
        ProtocolError: The TEE returned a malformed report or certificate table.
    """
    report = collect_report(report_data, root=root, name=name, fs=fs, attempts=attempts)
    if report.provider == "sev_guest":
        SnpReport.from_bytes(report.outblob)
        table = parse_cert_table(report.auxblob) if report.auxblob else {}
        certs = tuple(table[g] for g in (VCEK_GUID, ASK_GUID, ARK_GUID) if g in table)
        return Evidence("sev-snp", report.outblob, certs)
    if report.provider == "tdx_guest":
        return Evidence("tdx", report.outblob, ())
    raise CollectionError(f"unsupported configfs-tsm provider {report.provider!r}")
