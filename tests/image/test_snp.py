"""image.snp: the SEV-SNP launch digest through sev-snp-measure, with the verity command line.

The firmware is the 4 KiB end of real OVMF builds vendored from sev-snp-measure's own tests
(tests/image/fixtures/README.md): an AMD SEV build (with the SEV hashes table) and a standard
one (without, like Debian's OVMF.fd). No bootable SEV OVMF build is available here, so what is
checked is sev-snp-measure's own vector, that the digest follows every input, and that a
firmware which cannot measure a kernel is refused rather than given a digest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hushcc.errors import ConfigError
from image import manifest
from image.build import build
from image.progress import StepLog
from image.snp import launch_digest, snp_command

FIXTURES = Path(__file__).parent / "fixtures"
AMD_SEV = FIXTURES / "ovmf_AmdSev_suffix.bin"
STANDARD = FIXTURES / "ovmf_OvmfX64_suffix.bin"
CMDLINE = ('dm-mod.create="hushcc-root,,,ro,0 8 verity 1 /dev/vda /dev/vdb 4096 4096 1 1 '
           'sha256 ab cd"')
# sev-snp-measure's tests/test_guest.py, test_snp_default (commit 8f2b337).
UPSTREAM_VECTOR = ("803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb2"
                   "8c653360fe4b3aba7e534442e7e1e17895dfe778d0228977")


@pytest.fixture
def artefacts(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "vmlinuz").write_bytes(b"")  # the upstream vector's /dev/null
    (tmp_path / "initrd").write_bytes(b"")
    return {"ovmf": str(AMD_SEV), "kernel": str(tmp_path / "vmlinuz"),
            "initrd": str(tmp_path / "initrd")}


def test_the_command_line_carries_the_verity_fragment():
    args = snp_command({"ovmf": "O", "kernel": "K", "initrd": "I", "append": "console=ttyS0"},
                       CMDLINE)
    assert args[args.index("--append") + 1] == f"console=ttyS0 {CMDLINE}"
    assert args[args.index("--mode") + 1] == "snp"
    assert args[args.index("--vcpu-type") + 1] == "EPYC-v4"
    assert args[args.index("--guest-features") + 1] == "0x1"


def test_missing_artefacts_are_named():
    with pytest.raises(ConfigError, match="missing: kernel, initrd"):
        snp_command({"ovmf": "O"}, CMDLINE)


def test_sev_snp_measures_own_vector_is_reproduced(artefacts):
    options = {**artefacts, "append": "console=ttyS0 loglevel=7", "guest_features": "0x21"}
    assert launch_digest(options, "") == UPSTREAM_VECTOR


def test_the_digest_follows_cmdline_kernel_and_vm_shape(artefacts, tmp_path):
    base = launch_digest(artefacts, CMDLINE)
    assert launch_digest(artefacts, CMDLINE) == base  # recomputed: the same
    other_root = CMDLINE.replace("sha256 ab", "sha256 ac")  # another verity root
    assert launch_digest(artefacts, other_root) != base
    kernel = tmp_path / "vmlinuz2"
    kernel.write_bytes(b"\x01")
    assert launch_digest({**artefacts, "kernel": str(kernel)}, CMDLINE) != base
    assert launch_digest({**artefacts, "vcpus": "2"}, CMDLINE) != base


@pytest.mark.parametrize("firmware", ["standard-ovmf", "zeros"])
def test_a_firmware_without_the_sev_hashes_table_is_refused(artefacts, tmp_path, firmware):
    ovmf = STANDARD
    if firmware == "zeros":
        ovmf = tmp_path / "ovmf"
        ovmf.write_bytes(bytes(4096))
    with pytest.raises(ConfigError, match=r"not an AMD SEV build .*AmdSevX64\.dsc"):
        launch_digest({**artefacts, "ovmf": str(ovmf)}, CMDLINE)


def test_a_failing_sev_snp_measure_is_one_config_error(artefacts):
    with pytest.raises(ConfigError, match=r"sev-snp-measure failed: .*vcpu"):
        launch_digest({**artefacts, "vcpu_type": "no-such-cpu"}, CMDLINE)


def test_image_build_logs_the_launch_digest_of_its_own_verity_cmdline(tmp_path, image_inputs,
                                                                      artefacts):
    from dataclasses import replace  # noqa: PLC0415

    options = {**artefacts, "vcpus": "4", "vcpu_type": "EPYC-Milan", "append": "console=ttyS0"}
    inputs = replace(image_inputs.build_inputs(), snp=options)
    doc = build(inputs, tmp_path / "out", StepLog())
    cmdline = doc["verity"]["cmdline"]
    assert doc["verity"]["root_hash"] in cmdline
    assert doc["measurements"]["sev-snp"] == launch_digest(options, cmdline)
    launch = doc["sev_snp_launch"]
    assert launch["cmdline"] == f"console=ttyS0 {cmdline}"
    assert (launch["vcpus"], launch["vcpu_type"]) == (4, "EPYC-Milan")
    assert str(tmp_path) not in manifest.dumps(doc).decode()  # hashes, not host paths
    entry = manifest.release_entry(doc)
    assert entry.measurements["sev-snp"] == doc["measurements"]["sev-snp"]
