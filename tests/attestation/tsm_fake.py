"""A directory that behaves like a configfs-tsm report entry, backed by the simulated TEE."""

from __future__ import annotations

from pathlib import Path

from attestation.configfs_tsm import (
    ARK_GUID,
    ASK_GUID,
    VCEK_GUID,
    OsTsmFileSystem,
    build_cert_table,
)
from attestation.simulated import SimulatedTee

MEAS = b"\x07" * 48


class FakeKernel(OsTsmFileSystem):
    """Real files in a temporary directory, with configfs-tsm's reactions.

    mkdir creates the attributes; a write to inblob produces outblob/auxblob from the simulated
    TEE and bumps generation; `interfere` simulates another process writing inblob between our
    reads (it fires on the next `interfere` reads of outblob).
    """

    def __init__(self, tee: SimulatedTee, provider: str = "sev_guest", *, aux: bool = True
                 ) -> None:
        self.tee, self.provider, self.aux = tee, provider, aux
        self.interfere = 0
        self.created: list[Path] = []

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        self.created.append(path)
        (path / "generation").write_text("0\n")
        (path / "provider").write_text(self.provider + "\n")
        for attr in ("inblob", "outblob", "auxblob"):
            (path / attr).write_bytes(b"")
        if not self.aux:
            (path / "auxblob").unlink()

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        if path.name == "inblob":
            self._produce(path.parent, data)

    def _produce(self, entry: Path, data: bytes) -> None:
        gen = int((entry / "generation").read_text())
        (entry / "generation").write_text(f"{gen + 1}\n")
        (entry / "outblob").write_bytes(self.tee.report(data.ljust(64, b"\0"), MEAS))
        if self.aux:
            vcek, ask, ark = self.tee.certs()
            (entry / "auxblob").write_bytes(
                build_cert_table({VCEK_GUID: vcek, ASK_GUID: ask, ARK_GUID: ark}))

    def read(self, path: Path) -> bytes | None:
        if path.name == "outblob" and self.interfere:
            self.interfere -= 1
            self._produce(path.parent, b"\xee" * 64)  # someone else's request
        return super().read(path)
