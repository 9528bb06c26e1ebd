"""Self-measurement: stable, content- and path-sensitive, refuses what it cannot pin down."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from attestation.measure import (
    HEADER,
    list_files,
    manifest_digest,
    measure_node,
    measure_paths,
    measure_sources,
)
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


def _node_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    code = tmp_path / "code"
    (code / "node").mkdir(parents=True)
    (code / "node" / "service.py").write_bytes(b"SERVE = 1\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x08weights")
    config = tmp_path / "node.toml"
    config.write_text("port = 0\n")
    return code, model, config


def test_node_measurement_is_the_code_alone_without_model_or_config(tmp_path: Path) -> None:
    code, _, _ = _node_tree(tmp_path)
    assert measure_node(code)[0] == measure_sources(code)[0]


def test_node_measurement_covers_the_preloaded_native_library(tmp_path: Path) -> None:
    code, _, _ = _node_tree(tmp_path)
    before = measure_node(code)
    (code / "node" / "native").mkdir()
    (code / "node" / "native" / "erase_on_free.c").write_text("/* built, not run */\n")
    assert measure_node(code) == before  # twin: a file that does not run is not measured
    (code / "node" / "native" / "liberase_on_free.so").write_bytes(b"\x7fELF")
    measured, names = measure_node(code)
    assert names == ["node/native/liberase_on_free.so", "node/service.py"]
    assert measured != before[0]


def test_node_measurement_names_model_and_config_files(tmp_path: Path) -> None:
    code, model, config = _node_tree(tmp_path)
    measured, names = measure_node(code, model, config)
    assert names == ["node/service.py", "model/config.json", "model/model.safetensors",
                     "node.toml"]
    # The definition: the same as measuring one tree laid out like the image's app root.
    app = tmp_path / "app"
    (app / "node").mkdir(parents=True)
    (app / "model").mkdir()
    for name in names:
        src = {"node.toml": config}.get(name) or (
            model / name.removeprefix("model/") if name.startswith("model/") else code / name)
        (app / name).write_bytes(src.read_bytes())
    assert measured == measure_paths(app, names)
    gguf = tmp_path / "weights.gguf"
    gguf.write_bytes(b"GGUF\x03")
    assert measure_node(code, gguf)[1][-1] == "model/weights.gguf"


@pytest.mark.parametrize("victim", ["model/model.safetensors", "model/config.json", "node.toml"])
def test_one_byte_in_the_model_or_config_changes_the_node_measurement(tmp_path: Path,
                                                                      victim: str) -> None:
    code, model, config = _node_tree(tmp_path)
    before = measure_node(code, model, config)[0]
    target = config if victim == "node.toml" else model / victim.removeprefix("model/")
    data = bytearray(target.read_bytes())
    data[0] ^= 1
    target.write_bytes(bytes(data))
    assert measure_node(code, model, config)[0].digest != before.digest


def test_a_linked_model_file_is_measured_by_its_contents(tmp_path: Path) -> None:
    code, model, _ = _node_tree(tmp_path)
    before = measure_node(code, model)[0]
    blob = tmp_path / "blob"
    (model / "model.safetensors").rename(blob)
    (model / "model.safetensors").symlink_to(blob)  # a Hugging Face snapshot's layout
    assert measure_node(code, model)[0] == before
