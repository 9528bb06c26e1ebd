r"""Self-measurement: one digest over the exact code, model and configuration files a node runs.

`measure_node` is the node's own measurement at start (and the image build's `sim`): the code
under its source root (paths as there: `app/cli.py`, ...; the `.py` files and the native library
the node preloads where it is built, `RUN_SUFFIXES`), every file of the model it serves as
`model/<path>` (a GGUF file as `model/<file name>`), and the configuration file it was started
with as `node.toml`. With neither a model file nor a configuration file (the in-memory tiny
test model, flags only) it equals `measure_sources` over the code.

The image build and the node at boot call the same `measure_paths`, so a modified node file
gives a measurement that is not in the transparency log (DESIGN.md "Measurements").

Definition (hushcc-measure/v1):
  manifest = "hushcc-measure/v1\n" || for each file, sorted by its relative path's UTF-8 bytes:
             hex(SHA-256(contents)) || "  " || relative path (POSIX, UTF-8) || "\n"
  digest   = SHA-384(manifest)   (48 bytes: the SEV-SNP MEASUREMENT field of the simulated TEE)
Only contents and relative paths count: no timestamps, modes, owners or directory entries.
Paths must be relative, normalised, inside `root`, without `..`, and name regular files (a
symlink is refused, so what is measured is what is opened); duplicates are refused.

Invariants: `manifest_digest` is pure; `measure_paths` reads the files and nothing else.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

HEADER = b"hushcc-measure/v1\n"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Measurement:
    """A self-measurement: the manifest and its SHA-384 digest."""

    digest: bytes
    manifest: bytes

    @property
    def hex(self) -> str:
        """The digest as lowercase hex (as the release entry lists it)."""
        return self.digest.hex()


def manifest_digest(entries: Iterable[tuple[str, bytes]]) -> Measurement:
    """Build the manifest from (relative path, SHA-256 of contents) pairs and digest it.

    Args:
        entries: One pair per file, in any order.

    Returns:
        The measurement.

    Raises:
        ConfigError: A path appears twice or contains a newline.
    """
    ordered = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    paths = [p for p, _ in ordered]
    if len(set(paths)) != len(paths):
        raise ConfigError("a file is listed twice in the measured set")
    lines = []
    for path, digest in ordered:
        if "\n" in path or "\r" in path:
            raise ConfigError("measured paths must not contain line breaks")
        lines.append(digest.hex().encode("ascii") + b"  " + path.encode("utf-8") + b"\n")
    manifest = HEADER + b"".join(lines)
    return Measurement(hashlib.sha384(manifest).digest(), manifest)


def _normalise(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or str(path) != name or name == ".":
        raise ConfigError(f"measured path must be relative and normalised: {name!r}")
    return name


def _file_digest(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigError(f"cannot open measured file {path.name!r} (missing, a symlink)") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"measured path {path.name!r} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        h = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def measure_paths(root: Path, files: Iterable[str]) -> Measurement:
    """Measure the listed files under `root` (module docstring for the exact definition).

    Args:
        root: The directory the relative paths are relative to.
        files: Relative POSIX paths of the code, model and configuration files.

    Returns:
        The measurement.

    Raises:
        ConfigError: A path is absolute, escapes `root`, is a symlink or not a regular file,
            is missing, or is listed twice.
    """
    base = root.resolve()
    entries = []
    for name in files:
        rel = _normalise(name)
        target = base / rel
        if base not in target.resolve().parents:
            raise ConfigError(f"measured path escapes the root: {rel!r}")
        entries.append((rel, _file_digest(target)))
    return manifest_digest(entries)


def list_files(root: Path, subdirs: Iterable[str], suffixes: Iterable[str] = (".py",)) -> list[str]:
    """List regular files with the given suffixes under `root/subdir`, as relative paths.

    Args:
        root: The base directory.
        subdirs: Relative directories to walk (e.g. the package folders).
        suffixes: File name endings to keep.

    Returns:
        Sorted relative POSIX paths (symlinks and `__pycache__` are skipped).
    """
    ends = tuple(suffixes)
    out = []
    for sub in subdirs:
        for path in sorted((root / _normalise(sub)).rglob("*")):
            rel = path.relative_to(root)
            if ("__pycache__" in rel.parts or path.is_symlink() or not path.is_file()
                    or not path.name.endswith(ends)):
                continue
            out.append(rel.as_posix())
    return sorted(out)


# The installation's own top-level packages: what the node runs, so what it measures. `app` is
# the entry point `hushcc node serve` starts from, so a modified entry point changes it too.
SOURCE_PACKAGES = (
    "app", "hushcc", "ohttp", "attestation", "transparency_log", "node", "relay", "client",
)
# What of those packages runs: the Python sources, and the native library the node preloads
# (node/native/liberase_on_free.so, node.hygiene) where it is built.
RUN_SUFFIXES = (".py", ".so")


def code_files(root: Path) -> list[str]:
    """What of the project's packages under `root` runs (`RUN_SUFFIXES`), as relative paths."""
    return list_files(root, [p for p in SOURCE_PACKAGES if (root / p).is_dir()], RUN_SUFFIXES)


def source_root() -> Path:
    """The directory holding this installation's top-level packages."""
    return Path(__file__).resolve().parent.parent


def measure_sources(root: Path, files: Iterable[str] = ()) -> tuple[Measurement, list[str]]:
    """Self-measurement of the given files, or of every source package present under `root`.

    Returns:
        The measurement and the relative paths it covers.
    """
    chosen = list(files) or code_files(root)
    return measure_paths(root, chosen), chosen



MODEL_PREFIX = "model/"
CONFIG_NAME = "node.toml"


def _model_files(model: Path) -> list[tuple[str, Path]]:
    if model.is_file():
        return [(MODEL_PREFIX + model.name, model)]
    if not model.is_dir():
        raise ConfigError(f"model to measure not found: {model.name!r}")
    # Links are followed (a Hugging Face snapshot links its files into a blob store): what is
    # hashed is what the loader will open, named by the path it opens.
    found = [(MODEL_PREFIX + p.relative_to(model).as_posix(), p.resolve())
             for p in sorted(model.rglob("*")) if p.is_file()]
    if not found:
        raise ConfigError(f"no model files to measure in {model.name!r}")
    return found


def measure_node(root: Path, model: Path | None = None,
                 config: Path | None = None) -> tuple[Measurement, list[str]]:
    """The node's self-measurement over its code, model files and configuration file.

    Args:
        root: the folder holding the project's packages (`source_root()` at node start).
        model: the model directory or GGUF file the node serves (None: the in-memory tiny
            model, nothing on disk).
        config: the TOML configuration file it was started with (None: flags only).

    Returns:
        The measurement and the measured names (module docstring).

    Raises:
        ConfigError: a file cannot be opened or is not a regular file.
    """
    entries = [(rel, _file_digest(root / rel)) for rel in code_files(root)]
    if model is not None:
        entries += [(name, _file_digest(path)) for name, path in _model_files(model)]
    if config is not None:
        entries.append((CONFIG_NAME, _file_digest(config)))
    return manifest_digest(entries), [name for name, _ in entries]
