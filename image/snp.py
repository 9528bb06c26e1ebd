"""The SEV-SNP launch digest of the image's VM, computed with `sev-snp-measure` (I/O shell).

The digest covers the OVMF firmware, the kernel, the initrd and the kernel command line (which
carries the dm-verity root hash, so the launch digest pins the root filesystem too), for a given
vCPU count and type (DESIGN.md "Measurements"; docs/image.md). Options (`inputs.json` "snp"):
`ovmf`, `kernel`, `initrd` (paths), `vcpus` (default "1"), `vcpu_type` (default "EPYC-v4"),
`append` (extra command-line text placed before the verity fragment).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hushcc.errors import ConfigError

REQUIRED = ("ovmf", "kernel", "initrd")


def snp_command(options: dict[str, str], cmdline: str) -> list[str]:
    """The `sev-snp-measure` argument list (without the program name).

    Raises:
        ConfigError: a required option is missing.
    """
    missing = [k for k in REQUIRED if not options.get(k)]
    if missing:
        raise ConfigError("the SEV-SNP launch digest needs --ovmf, --kernel and --initrd "
                          f"(missing: {', '.join(missing)})")
    append = " ".join(p for p in (options.get("append", ""), cmdline) if p)
    return ["--mode", "snp", "--vcpus", options.get("vcpus", "1"),
            "--vcpu-type", options.get("vcpu_type", "EPYC-v4"),
            "--ovmf", options["ovmf"], "--kernel", options["kernel"],
            "--initrd", options["initrd"], "--append", append, "--output-format", "hex"]


def launch_digest(options: dict[str, str], cmdline: str) -> str:
    """Run sev-snp-measure and return the 48-byte launch digest as lowercase hex.

    Raises:
        ConfigError: sev-snp-measure is missing, fails, or prints something else.
    """
    args = snp_command(options, cmdline)
    tool = shutil.which("sev-snp-measure", path=str(Path(sys.executable).parent))
    if tool is None:
        tool = shutil.which("sev-snp-measure")
    if tool is None:
        raise ConfigError("sev-snp-measure not found: pip install sev-snp-measure")
    try:
        done = subprocess.run([tool, *args], check=True, capture_output=True)  # noqa: S603
    except subprocess.CalledProcessError as exc:
        raise ConfigError("sev-snp-measure failed (is --ovmf an AMD SEV OVMF build?)") from exc
    digest = done.stdout.decode(errors="replace").strip().lower()
    if len(digest) != 96 or not all(c in "0123456789abcdef" for c in digest):
        raise ConfigError("sev-snp-measure printed no 48-byte launch digest")
    return digest
