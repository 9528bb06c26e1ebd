"""image publish / verify against a real `hushcc log serve`, and the measurement chain (B2).

One published image is shared by the module; a second image built from a checkout with one
flipped byte stands for a modified release.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.measure import source_root
from image import content, manifest, tools
from image.build import build, node_measurement
from image.content import PACKAGES
from image.progress import StepLog
from image.release import RELEASE_FILE
from tests.image.conftest import HUSHCC, Inputs, hushcc_env
from tests.node.node_process import start_node

FLIPPED = "ohttp/__init__.py"


@dataclass(frozen=True)
class Log:
    url: str
    log_pub: Path
    release_key: Path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUSHCC, *args], capture_output=True, text=True, env=hushcc_env(),
                          check=False, timeout=300)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    base = tmp_path_factory.mktemp("log")
    for name in ("log", "rel"):
        assert _cli("log", "keygen", "--out", str(base / f"{name}.key"), "--name",
                    f"{name}.hushcc.test").returncode == 0
    proc = subprocess.Popen(
        [*HUSHCC, "log", "serve", "--host", "127.0.0.1", "--port", "0", "--state-dir",
         str(base / "state"), "--log-key", str(base / "log.key"), "--release-key",
         str(base / "rel.key.pub")], stdout=subprocess.PIPE, text=True, env=hushcc_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield Log(line.split()[-1], base / "log.key.pub", base / "rel.key")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, image_inputs: Inputs, log: Log) -> Path:
    out = tmp_path_factory.mktemp("published") / "image"
    build(image_inputs.build_inputs(), out, StepLog())
    done = _cli("image", "publish", str(out), "--log", log.url, "--key", str(log.release_key),
                "--log-key", str(log.log_pub))
    assert done.returncode == 0, done.stderr
    assert "inclusion proof verified" in done.stdout
    return out


def _verify(folder: Path, log: Log, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli("image", "verify", str(folder), "--log", log.url, "--log-key",
                str(log.log_pub), *extra)


def test_verify_rebuilds_and_checks_the_log(published, log):
    done = _verify(published, log)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("image digest", "dm-verity root (pure recomputation)",
                 "rebuild from the same inputs", "inclusion in the stored checkpoint",
                 "log checkpoint consistent with the stored one"):
        assert f"ok    {step}" in done.stdout
    assert done.stdout.rstrip().endswith("image verified")


def test_verify_with_another_pinned_log_key_fails(published, log, tmp_path):
    assert _cli("log", "keygen", "--out", str(tmp_path / "other.key"), "--name",
                "log.hushcc.test").returncode == 0
    done = _cli("image", "verify", str(published), "--log", log.url, "--log-key",
                str(tmp_path / "other.key.pub"))
    assert done.returncode == 1
    assert "FAIL  log:" in done.stdout


def test_a_tampered_hash_tree_is_found_without_cryptsetup(published, tmp_path, log):
    copy = tmp_path / "image"
    shutil.copytree(published, copy)
    data = bytearray((copy / manifest.HASH_FILE).read_bytes())
    data[-1] ^= 1
    (copy / manifest.HASH_FILE).write_bytes(bytes(data))
    done = _verify(copy, log)
    assert done.returncode == 1
    assert "FAIL  dm-verity root (pure recomputation)" in done.stdout


def _flipped_checkout(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(source_root() / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = dest / FLIPPED
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return dest


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory, published: Path, image_inputs: Inputs,
            log: Log) -> Path:
    """An image built from a checkout with one flipped byte, and even logged."""
    base = tmp_path_factory.mktemp("flipped")
    bad = base / "bad"
    doc = build(image_inputs.build_inputs(_flipped_checkout(base / "checkout")), bad, StepLog())
    good = manifest.loads((published / manifest.MANIFEST_FILE).read_bytes())
    assert doc["image"]["digest"] != good["image"]["digest"]
    assert doc["measurements"]["sim"] != good["measurements"]["sim"]
    assert manifest.first_difference(good, doc) == f"file opt/hushcc/code/{FLIPPED} differs"
    assert _cli("image", "publish", str(bad), "--log", log.url, "--key",
                str(log.release_key)).returncode == 0
    return bad


def test_one_flipped_byte_fails_verify_with_diffoscope_output(flipped, log):
    """An auditor rebuilding from the real checkout refuses it, names the file, shows diffoscope."""
    assert shutil.which("diffoscope"), "diffoscope is missing: make setup installs it as root"
    done = _verify(flipped, log, "--source", str(source_root()))
    assert done.returncode == 1
    assert f"FAIL  rebuild from the same inputs: file opt/hushcc/code/{FLIPPED} differs" \
        in done.stdout
    report = done.stdout.split("FAIL  diffoscope:", 1)[1]
    # diffoscope's own report on the two squashfs images, down to the changed file.
    assert report.lstrip().startswith("--- ")
    assert manifest.IMAGE_FILE in report
    section = report.split(f"opt/hushcc/code/{FLIPPED}", 1)[1]
    assert "\n│ -" in section  # the published file's line ...
    assert "\n│ +" in section  # ... and the rebuilt one's
    assert done.stdout.rstrip().endswith("image verification FAILED")


def test_one_flipped_byte_fails_verify_naming_the_file_without_diffoscope(flipped, log,
                                                                          tmp_path):
    """The twin: with no diffoscope on PATH the first differing file is still named."""
    tools_only = tmp_path / "bin"
    tools_only.mkdir()
    for tool in ("mksquashfs", "unsquashfs"):
        found = shutil.which(tool)
        assert found is not None
        (tools_only / tool).symlink_to(found)
    done = subprocess.run(
        [*HUSHCC, "image", "verify", str(flipped), "--log", log.url, "--log-key",
         str(log.log_pub), "--source", str(source_root())], capture_output=True, text=True,
        env=hushcc_env(PATH=str(tools_only)), check=False, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f"FAIL  rebuild from the same inputs: file opt/hushcc/code/{FLIPPED} differs" \
        in done.stdout
    assert "diffoscope" not in done.stdout
    assert done.stdout.rstrip().endswith("image verification FAILED")


POLICY = """allow_simulated = true
require_gpu = false
log_key = "{log_key}"
revocation = "best-effort"
"""


def _flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", [
    pytest.param(None, id="unmodified"),
    pytest.param("model/model.safetensors", id="model-byte"),
    pytest.param("node.toml", id="config-byte"),
])
def test_b2_a_node_started_from_the_image_attests_the_logged_measurement(
        published, log, tmp_path, victim):
    """SECURITY.md B2 and issue 14 step 4: recomputed = logged = attested by a node started
    from the image; one byte changed in the model or the configuration and it is refused."""
    doc = manifest.loads((published / manifest.MANIFEST_FILE).read_bytes())
    stapled = json.loads((published / RELEASE_FILE).read_text())
    entry = json.loads(base64.b64decode(stapled["entry"]))
    extracted = tmp_path / "root"
    tools.unsquashfs(published / manifest.IMAGE_FILE, extracted)
    app = content.app_root(extracted)
    assert node_measurement(app).hex == doc["measurements"]["sim"] == entry["measurements"]["sim"]
    if victim == "model/model.safetensors":
        _flip(app / victim, -1)  # the last weight's last byte: the model still loads
    elif victim == "node.toml":
        _flip(app / victim, 2)  # in the comment: the same settings, another file
    # Started as the image's entrypoint starts it: its code, --config and --model from the image.
    node = start_node(tmp_path / "node", "--config", str(app / content.CONFIG_FILE), "--model",
                      str(app / content.MODEL_DIR), "--release", str(published / RELEASE_FILE),
                      env={"PYTHONPATH": str(app / content.CODE_DIR)})
    try:
        bundle = tmp_path / "bundle.json"
        bundle.write_bytes(node.get("/attestation"))
    finally:
        assert node.stop() == 0
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(log_key=log.log_pub.read_text().strip()))
    done = _cli("attest", "verify", str(bundle), "--policy", str(policy))
    if victim is None:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[PASS] (4)" in done.stdout
    else:
        assert done.returncode == 1, done.stdout
        assert "[FAIL] (4) measurement" in done.stdout
