"""image.snp: the SEV-SNP launch digest goes through sev-snp-measure with the verity cmdline.

No AMD SEV OVMF build is available here, so the digest itself is not computed in CI; what is
tested is the argument list (the command line carries the verity root) and that every failure
is one ConfigError.
"""

from __future__ import annotations

import pytest

from hushcc.errors import ConfigError
from image.snp import launch_digest, snp_command

CMDLINE = ('dm-mod.create="hushcc-root,,,ro,0 8 verity 1 /dev/vda /dev/vdb 4096 4096 1 1 '
           'sha256 ab cd"')


def test_the_command_line_carries_the_verity_fragment():
    args = snp_command({"ovmf": "O", "kernel": "K", "initrd": "I", "append": "console=ttyS0"},
                       CMDLINE)
    assert args[args.index("--append") + 1] == f"console=ttyS0 {CMDLINE}"
    assert args[args.index("--mode") + 1] == "snp"
    assert args[args.index("--vcpu-type") + 1] == "EPYC-v4"


def test_missing_artefacts_are_named():
    with pytest.raises(ConfigError, match="missing: kernel, initrd"):
        snp_command({"ovmf": "O"}, CMDLINE)


def test_a_file_that_is_no_ovmf_is_a_config_error(tmp_path):
    for name in ("ovmf", "kernel", "initrd"):
        (tmp_path / name).write_bytes(b"\0" * 4096)
    options = {n: str(tmp_path / n) for n in ("ovmf", "kernel", "initrd")}
    with pytest.raises(ConfigError, match="sev-snp-measure failed"):
        launch_digest(options, CMDLINE)
