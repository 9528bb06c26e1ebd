"""The SEV-SNP launch digest of the image's VM, computed with `sev-snp-measure` (I/O shell).

The digest covers the OVMF firmware, the kernel, the initrd and the kernel command line (which
carries the dm-verity root hash, so the launch digest pins the root filesystem too), for a given
vCPU count and type and guest features (DESIGN.md "Measurements"; docs/image.md). Options
(`inputs.json` "snp"): `ovmf`, `kernel`, `initrd` (paths), `vcpus` (default "1"), `vcpu_type`
(default "EPYC-v4"), `guest_features` (default "0x1", sev-snp-measure's), `append` (extra
command-line text placed before the verity fragment).

Only an AMD SEV build of OVMF (edk2 `OvmfPkg/AmdSev/AmdSevX64.dsc`) measures a kernel, initrd
and command line: it carries the SEV hashes table (the SNP_KERNEL_HASHES metadata section) that
QEMU fills and the launch digest covers. A standard OVMF (`OvmfPkgX64.dsc`, what Debian's `ovmf`
package ships as OVMF.fd) has SNP metadata but no such table, so a digest with a kernel cannot
exist for it; that case is a ConfigError saying so, never a digest that would not pin the image.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hushcc.errors import ConfigError
from hushcc.files import sha256_file

REQUIRED = ("ovmf", "kernel", "initrd")
DEFAULTS = {"vcpus": "1", "vcpu_type": "EPYC-v4", "guest_features": "0x1"}
_NO_HASHES_TABLE = "SNP_KERNEL_HASHES"


def _option(options: dict[str, str], name: str) -> str:
    return options.get(name) or DEFAULTS[name]


def snp_command(options: dict[str, str], cmdline: str) -> list[str]:
    """The `sev-snp-measure` argument list (without the program name).

    Raises:
        ConfigError: a required option is missing.
    """
    missing = [k for k in REQUIRED if not options.get(k)]
    if missing:
        raise ConfigError("the SEV-SNP launch digest needs --ovmf, --kernel and --initrd "
                          f"(missing: {', '.join(missing)})")
    return ["--mode", "snp", "--vcpus", _option(options, "vcpus"),
            "--vcpu-type", _option(options, "vcpu_type"),
            "--guest-features", _option(options, "guest_features"),
            "--ovmf", options["ovmf"], "--kernel", options["kernel"],
            "--initrd", options["initrd"], "--append", full_cmdline(options, cmdline),
            "--output-format", "hex"]


def full_cmdline(options: dict[str, str], cmdline: str) -> str:
    """The guest's whole kernel command line: the extra text, then the verity fragment."""
    return " ".join(p for p in (options.get("append", ""), cmdline) if p)


def _tool() -> str:
    tool = shutil.which("sev-snp-measure", path=str(Path(sys.executable).parent))
    if tool is None:
        tool = shutil.which("sev-snp-measure")
    if tool is None:
        raise ConfigError("sev-snp-measure not found: pip install sev-snp-measure")
    return tool


def launch_digest(options: dict[str, str], cmdline: str) -> str:
    """Run sev-snp-measure and return the 48-byte launch digest as lowercase hex.

    Raises:
        ConfigError: sev-snp-measure is missing or fails (naming a firmware without the SEV
            hashes table), or prints something else.
    """
    args = snp_command(options, cmdline)
    try:
        done = subprocess.run([_tool(), *args], check=True, capture_output=True,  # noqa: S603
                              timeout=120)
    except subprocess.CalledProcessError as exc:
        if _NO_HASHES_TABLE in exc.stderr.decode(errors="replace"):
            raise ConfigError(
                "this --ovmf is not an AMD SEV build of OVMF: it has no SEV hashes table "
                "(SNP_KERNEL_HASHES), so it cannot measure a kernel, initrd and command line "
                "(build edk2 OvmfPkg/AmdSev/AmdSevX64.dsc)") from exc
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"sev-snp-measure failed: {tail[0][:200]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigError("sev-snp-measure ran past 120 s") from exc
    digest = done.stdout.decode(errors="replace").strip().lower()
    if len(digest) != 96 or not all(c in "0123456789abcdef" for c in digest):
        raise ConfigError("sev-snp-measure printed no 48-byte launch digest")
    return digest


def launch_description(options: dict[str, str], cmdline: str) -> dict[str, str | int]:
    """What the launch digest covers, for the manifest (no host paths).

    The VM shape, the SHA-256 of the firmware, kernel and initrd, and the whole command line.
    """
    return {"vcpus": int(_option(options, "vcpus")), "vcpu_type": _option(options, "vcpu_type"),
            "guest_features": _option(options, "guest_features"),
            "ovmf_sha256": sha256_file(Path(options["ovmf"])),
            "kernel_sha256": sha256_file(Path(options["kernel"])),
            "initrd_sha256": sha256_file(Path(options["initrd"])),
            "cmdline": full_cmdline(options, cmdline)}
