"""image.cache: a checked, content-addressed cache of the model's conversion.

A damaged or planted entry is never staged: it is detected by hashing and made again; the
intact entry (the twin) is a hit and `make` is not called.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hushcc.errors import ConfigError
from image.cache import FILES, Cache, cache_key
from image.model import MODEL_KIND, conversion_key, stage_model

KEY = cache_key("test", "0" * 64, {"maker": "1"})


class Maker:
    """A `make` that writes two files and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "sub").mkdir(parents=True)
        (folder / "a.bin").write_bytes(b"derived bytes")
        (folder / "sub" / "b.json").write_text('{"x": 1}')


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Cache, Maker]:
    cache, maker = Cache(tmp_path / "cache"), Maker()
    assert cache.materialise("kind", KEY, maker, tmp_path / "cold") is False
    return cache, maker


def test_an_intact_entry_is_a_hit_with_the_same_bytes(tmp_path, filled):
    cache, maker = filled
    assert cache.materialise("kind", KEY, maker, tmp_path / "warm") is True
    assert maker.calls == 1
    assert _tree(tmp_path / "warm") == _tree(tmp_path / "cold")


@pytest.mark.parametrize("damage", ["flip-byte", "extra-file", "missing-file", "symlink",
                                    "bad-index"])
def test_a_damaged_entry_is_made_again_never_staged(tmp_path, filled, damage):
    cache, maker = filled
    entry = cache.root / "kind" / KEY
    target = entry / FILES / "a.bin"
    if damage == "flip-byte":
        data = bytearray(target.read_bytes())
        data[0] ^= 1
        target.write_bytes(bytes(data))
    elif damage == "extra-file":
        (entry / FILES / "sub" / "planted.py").write_text("import os\n")
    elif damage == "missing-file":
        target.unlink()
    elif damage == "symlink":
        target.unlink()
        target.symlink_to("/etc/hostname")
    else:
        (entry / "index.json").write_text("{")
    assert cache.materialise("kind", KEY, maker, tmp_path / "warm") is False
    assert maker.calls == 2
    assert _tree(tmp_path / "warm") == _tree(tmp_path / "cold")
    # The entry was made again, so the next use is a hit.
    assert cache.materialise("kind", KEY, maker, tmp_path / "again") is True


def test_a_failed_make_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path / "cache")

    def broken(folder: Path) -> None:
        folder.mkdir()
        (folder / "half").write_bytes(b"x")
        raise ConfigError("cannot load the GGUF model")

    with pytest.raises(ConfigError, match="GGUF"):
        cache.materialise("kind", KEY, broken, tmp_path / "dest")
    assert not cache.has("kind", KEY)
    assert list((cache.root / "kind").iterdir()) == []


def test_a_cache_writable_by_others_is_refused(tmp_path):
    root = tmp_path / "shared"
    root.mkdir(mode=0o700)
    Cache(root)  # the twin: our own 0700 directory is used
    root.chmod(0o777)
    with pytest.raises(ConfigError, match="not writable by group or others"):
        Cache(root)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"cannot be created|not a directory"):
        Cache(tmp_path / "file")


def test_the_conversion_key_follows_the_gguf_bytes(tmp_path, image_inputs):
    copy = tmp_path / "same.gguf"
    shutil.copyfile(image_inputs.gguf, copy)
    assert conversion_key(copy) == conversion_key(image_inputs.gguf)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    assert conversion_key(copy) != conversion_key(image_inputs.gguf)


def test_a_cached_conversion_equals_a_fresh_one(tmp_path, image_inputs):
    cache = Cache(tmp_path / "cache")
    assert stage_model(image_inputs.gguf, tmp_path / "fresh") == "converted"
    assert stage_model(image_inputs.gguf, tmp_path / "cold", cache) == "converted"
    assert stage_model(image_inputs.gguf, tmp_path / "warm", cache) == "cached"
    assert cache.has(MODEL_KIND, conversion_key(image_inputs.gguf))
    fresh = _tree(tmp_path / "fresh")
    assert "model.safetensors" in fresh
    assert _tree(tmp_path / "cold") == fresh
    assert _tree(tmp_path / "warm") == fresh
