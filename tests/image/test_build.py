"""image build: reproducibility (B1), no privileged programs (B3), inputs pinned by hash."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from attestation.measure import source_root
from hushcc.errors import ConfigError
from image import content, manifest, tools
from image.build import build
from image.content import PACKAGES
from image.deps import lock_from_wheels, parse_lock
from image.model import MODEL_KIND
from image.progress import StepLog
from tests.image.conftest import EPOCH, HUSHCC, hushcc_env
from tests.image.image_helpers import make_wheel

ARTEFACTS = (manifest.IMAGE_FILE, manifest.HASH_FILE, manifest.MANIFEST_FILE)


def _copy_with_other_mtimes(src: Path, dest: Path) -> Path:
    rng = random.Random(11)
    for package in PACKAGES:
        shutil.copytree(src / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for path in dest.rglob("*"):
        when = rng.randrange(10**9, 2 * 10**9)
        os.utime(path, (when, when))
    return dest


def _build_cli(out: Path, flags: list[str], *, env: dict[str, str], umask: int,
               hostname: str | None) -> subprocess.CompletedProcess[str]:
    argv = [*HUSHCC, "image", "build", "--out", str(out), *flags]
    if hostname is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", "0", *argv]  # one CPU: mksquashfs runs one compressor thread
    if hostname is not None and shutil.which("unshare"):
        # A UTS namespace of its own, so the build runs under another hostname.
        argv = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "-", *argv]
    return subprocess.run(argv, env=env, umask=umask, capture_output=True, text=True,
                          check=False, timeout=300)


def test_b1_two_builds_in_different_environments_are_byte_identical(tmp_path, image_inputs):
    """SECURITY.md B1: other dir, umask, TMPDIR, locale, hostname, CPU count, input mtimes.

    The model is a GGUF file, so build (a) converts it into an empty cache (cold) and build (b)
    takes the checked conversion from that cache (warm): warm and cold give the same bytes.
    """
    other_source = _copy_with_other_mtimes(source_root(), tmp_path / "checkout")
    other_model = tmp_path / "model-copy" / "tiny.gguf"
    other_model.parent.mkdir()
    shutil.copyfile(image_inputs.gguf, other_model)
    os.utime(other_model, (123456789, 123456789))
    cache = tmp_path / "cache"
    entries: list[set[tuple[str, int]]] = []
    runs = []
    for name, source, model, umask, locale, host in [
        ("a", source_root(), image_inputs.gguf, 0o022, "C", None),
        ("b", other_source, other_model, 0o077, "C.UTF-8", "other-builder"),
    ]:
        tmpdir = tmp_path / f"tmp-{name}"
        tmpdir.mkdir()
        flags = ["--model", str(model), "--lock", str(image_inputs.lock), "--wheels",
                 str(image_inputs.wheels), "--source", str(source), "--source-date-epoch",
                 str(EPOCH), "--cache", str(cache)]
        env = hushcc_env(TMPDIR=str(tmpdir), LC_ALL=locale, LANG=locale, TZ=f"Etc/GMT-{len(name)}")
        done = _build_cli(tmp_path / f"out-{name}" / "deep" / name, flags, env=env, umask=umask,
                          hostname=host)
        assert done.returncode == 0, done.stderr
        runs.append(tmp_path / f"out-{name}" / "deep" / name)
        entries.append({(p.name, p.stat().st_ino) for p in (cache / MODEL_KIND).iterdir()})
    # (a) made one cache entry; (b) used that very entry (same directory, not remade).
    assert len(entries[0]) == 1
    assert entries[1] == entries[0]
    a, b = runs
    for artefact in ARTEFACTS:
        assert (a / artefact).read_bytes() == (b / artefact).read_bytes(), artefact
    doc = manifest.loads((a / manifest.MANIFEST_FILE).read_bytes())
    assert doc["dependencies"]["packages"] == 1
    assert {"opt/hushcc/model/model.safetensors", "opt/hushcc/model/config.json",
            "opt/hushcc/model/tokenizer.json"} <= {row[0] for row in doc["files"]}
    assert doc["code"]["files"] > 50
    # No host path of either build leaked into the manifest.
    text = (a / manifest.MANIFEST_FILE).read_text()
    assert str(tmp_path) not in text
    assert str(source_root()) not in text


def test_b3_the_built_image_holds_no_privileged_program(tmp_path, image_inputs):
    doc = build(image_inputs.build_inputs(), tmp_path / "out", StepLog())
    paths = [row[0] for row in doc["files"]]
    assert manifest.scan_forbidden(paths) == []
    assert "opt/hushcc/entrypoint.py" in paths
    executables = [row[0] for row in doc["files"] if int(row[1], 8) & 0o111]
    assert executables == ["opt/hushcc/entrypoint.py"]
    # The positive twin: the same scan over the same list with one shell planted finds it.
    planted = [*paths, "usr/bin/sh"]
    assert manifest.scan_forbidden(planted) == [("usr/bin/sh", "shell")]


@pytest.mark.parametrize(("path", "kind"), [
    pytest.param("usr/sbin/sshd", "remote login", id="sshd"),
    pytest.param("etc/systemd/system/getty@.service", "getty", id="getty"),
    pytest.param("opt/hushcc/site-packages/pip/__init__.py", "package manager", id="pip"),
    pytest.param("usr/bin/gdb", "debugger", id="gdb"),
    pytest.param("usr/bin/gcc", "compiler", id="gcc"),
    pytest.param("bin/busybox", "shell", id="busybox"),
    pytest.param("opt/hushcc/site-packages/Cython/Compiler/Main.py", "compiler", id="cython"),
    pytest.param("opt/hushcc/site-packages/debugpy/__init__.py", "debugger", id="debugpy"),
])
def test_b3_scan_finds_each_kind(path, kind):
    assert manifest.scan_forbidden(["opt/hushcc/node.toml", path]) == [(path, kind)]


@pytest.mark.parametrize("path", [
    pytest.param("opt/hushcc/site-packages/numpy/_core/tests/examples/cython/checks.pyx",
                 id="cython-test-data"),
    pytest.param("opt/hushcc/site-packages/torch/include/c10/util/ssize.h", id="header"),
    pytest.param("opt/hushcc/code/node/engine/sampling.py", id="own-code"),
])
def test_b3_scan_leaves_files_that_only_mention_a_name(path):
    assert manifest.scan_forbidden([path]) == []


def test_b3_a_dependency_planting_a_debugger_is_refused(tmp_path, image_inputs):
    wheels = tmp_path / "wheels"
    wheel = make_wheel(wheels, "sneaky", "1.0")
    with zipfile.ZipFile(wheel, "a") as z:  # RECORD does not list it; pip installs it anyway
        z.writestr("sneaky/gdbserver", "not really a debugger")
    lock = tmp_path / "lock"
    lock.write_text(lock_from_wheels(wheels))
    inputs = image_inputs.build_inputs()
    with pytest.raises(ConfigError, match=r"debugger: opt/hushcc/site-packages/sneaky/gdbserver"):
        build(replace(inputs, lock=lock, wheels=wheels), tmp_path / "out", StepLog())


def test_a_wheel_not_matching_its_locked_hash_is_refused(tmp_path, image_inputs):
    wheels = tmp_path / "wheels"
    shutil.copytree(image_inputs.wheels, wheels)
    lock = tmp_path / "lock"
    lock.write_text(lock_from_wheels(wheels))
    wheel = next(wheels.glob("*.whl"))
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("tinydep/extra.py", "X = 1\n")
    inputs = replace(image_inputs.build_inputs(), lock=lock, wheels=wheels)
    with pytest.raises(ConfigError, match="pip install of the locked dependencies failed"):
        build(inputs, tmp_path / "out", StepLog())


@pytest.mark.parametrize("line", [
    pytest.param("tinydep==1.0\n", id="no-hash"),
    pytest.param("tinydep>=1.0 --hash=sha256:" + "0" * 64 + "\n", id="not-pinned"),
    pytest.param("tinydep==1.0 --hash=md5:" + "0" * 32 + "\n", id="weak-hash"),
])
def test_lock_lines_must_pin_a_version_and_a_sha256(line):
    with pytest.raises(ConfigError, match="lock line 1"):
        parse_lock(line)


def test_a_missing_tool_is_named(tmp_path, image_inputs, monkeypatch):
    env = hushcc_env(PATH=str(tmp_path))  # neither mksquashfs nor anything else on PATH
    done = subprocess.run([*HUSHCC, "image", "build", "--out", str(tmp_path / "o"),
                           *image_inputs.flags()], env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 1
    assert "mksquashfs not found: install the Debian package squashfs-tools" in done.stderr
    assert "Traceback" not in done.stderr
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "_EXTRA_DIRS", ())
    with pytest.raises(ConfigError, match=r"veritysetup not found: .*cryptsetup-bin"):
        tools.find_tool("veritysetup")


def test_content_naming_a_host_path_is_refused(tmp_path):
    root = tmp_path / "root"
    content.write_text(root, "node.toml", f'model = "{tmp_path}/model"\n')
    content.check_no_host_paths(root, ["/elsewhere"])  # the positive twin passes
    with pytest.raises(ConfigError, match=r"opt/hushcc/node\.toml contains a host path"):
        content.check_no_host_paths(root, [str(tmp_path)])


def test_a_symlink_in_the_content_is_refused(tmp_path):
    root = tmp_path / "root"
    content.write_text(root, "node.toml", "")
    (content.app_root(root) / "link").symlink_to("node.toml")
    with pytest.raises(ConfigError, match="regular files: opt/hushcc/link"):
        content.normalise(root, 0)
