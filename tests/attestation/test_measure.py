"""Self-measurement: stable, content- and path-sensitive, refuses what it cannot pin down."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from attestation.measure import HEADER, list_files, manifest_digest, measure_paths
from hushcc.errors import ConfigError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_bytes(b"A = 1\n")
    (tmp_path / "pkg" / "b.py").write_bytes(b"B = 2\n")
    (tmp_path / "model.gguf").write_bytes(b"\x00weights")
    (tmp_path / "node.toml").write_text("port = 0\n")
    return tmp_path


FILES = ["pkg/a.py", "pkg/b.py", "model.gguf", "node.toml"]


def test_definition(tree: Path) -> None:
    m = measure_paths(tree, FILES)
    lines = sorted(f"{hashlib.sha256((tree / f).read_bytes()).hexdigest()}  {f}\n" for f in FILES)
    manifest = HEADER + "".join(sorted(lines, key=lambda line: line.split("  ")[1])).encode()
    assert m.manifest == manifest
    assert m.digest == hashlib.sha384(manifest).digest()
    assert len(m.digest) == 48
    assert m.hex == m.digest.hex()


def test_order_and_timestamps_do_not_matter(tree: Path) -> None:
    first = measure_paths(tree, FILES)
    os.utime(tree / "pkg" / "a.py", (1, 1))
    (tree / "node.toml").chmod(0o600)
    assert measure_paths(tree, list(reversed(FILES))) == first


@pytest.mark.parametrize("victim", FILES)
def test_any_modified_file_changes_it(tree: Path, victim: str) -> None:
    before = measure_paths(tree, FILES)
    with (tree / victim).open("ab") as handle:
        handle.write(b"#")
    assert measure_paths(tree, FILES).digest != before.digest


def test_renamed_file_changes_it(tree: Path) -> None:
    before = measure_paths(tree, FILES)
    (tree / "node.toml").rename(tree / "node2.toml")
    after = measure_paths(tree, [f.replace("node.toml", "node2.toml") for f in FILES])
    assert after.digest != before.digest


def test_added_file_changes_it(tree: Path) -> None:
    assert measure_paths(tree, FILES[:-1]).digest != measure_paths(tree, FILES).digest


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "pkg/../node.toml", "./node.toml",
                                 "", ".", "pkg//a.py", "missing.py", "pkg"])
def test_refused_paths(tree: Path, bad: str) -> None:
    with pytest.raises(ConfigError):
        measure_paths(tree, [bad])


def test_symlink_refused(tree: Path) -> None:
    (tree / "link.py").symlink_to(tree / "pkg" / "a.py")
    with pytest.raises(ConfigError):
        measure_paths(tree, ["link.py"])
    assert measure_paths(tree, ["pkg/a.py"])


def test_duplicates_refused(tree: Path) -> None:
    with pytest.raises(ConfigError):
        measure_paths(tree, ["pkg/a.py", "pkg/a.py"])
    with pytest.raises(ConfigError):
        manifest_digest([("a\nb", bytes(32))])


def test_list_files(tree: Path) -> None:
    (tree / "pkg" / "__pycache__").mkdir()
    (tree / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    assert list_files(tree, ["pkg"]) == ["pkg/a.py", "pkg/b.py"]
