"""Assemble and normalise the node image's root filesystem content in a staging directory.

Layout (everything the node runs lives under `opt/hushcc`, the *app root*):
    opt/hushcc/code/<package>/...   the project's packages from the checkout (sources and data)
    opt/hushcc/site-packages/...    the pinned dependency set, installed from wheels by hash
    opt/hushcc/requirements.lock    that lock file
    opt/hushcc/model/...            the model as safetensors + config + tokenizer files
    opt/hushcc/node.toml            the node configuration
    opt/hushcc/entrypoint.py        starts `hushcc node serve --config node.toml --model model`

Invariants after `normalise`: only directories and regular files (a symlink, device or FIFO is
refused), directories 0755, files 0644 (the entrypoint 0755), every mtime SOURCE_DATE_EPOCH, no
`__pycache__`, `*.pyc` or pip `bin/` scripts (their shebangs name the host's interpreter), and no
file containing a host path of the build (`check_no_host_paths`). Owners are set to root by
mksquashfs (`-all-root`), so the build needs no privileges.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from hushcc.errors import ConfigError

APP_ROOT = PurePosixPath("opt/hushcc")
CODE_DIR = "code"
DEPS_DIR = "site-packages"
MODEL_DIR = "model"
CONFIG_FILE = "node.toml"
LOCK_FILE = "requirements.lock"
ENTRYPOINT = "entrypoint.py"
# The project's packages (pyproject's setuptools include list) and their package data.
PACKAGES = ("hushcc", "app", "ohttp", "attestation", "transparency_log", "image", "node",
            "relay", "client")
CODE_SUFFIXES = (".py", "py.typed", ".pem", ".der", ".json")

ENTRYPOINT_TEXT = '''#!/usr/bin/python3 -I
"""hushcc node image entrypoint: start the sealed node with the configuration this image carries.

No shell is involved: the kernel runs the interpreter named above on this file.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.dont_write_bytecode = True
sys.path[:0] = [str(ROOT / "code"), str(ROOT / "site-packages")]

from app.cli import main  # noqa: E402

sys.exit(main(["node", "serve", "--config", str(ROOT / "node.toml"),
               "--model", str(ROOT / "model")]))
'''

DEFAULT_CONFIG = """# hushcc node configuration carried in the image (`hushcc node serve --config`).
# The entrypoint passes --model /opt/hushcc/model.
host = "0.0.0.0"
port = 8443
tee = "simulated"
"""


def app_root(staging: Path) -> Path:
    """The app root inside a staging (or extracted) root filesystem."""
    return staging / APP_ROOT


def code_files(source: Path) -> list[str]:
    """The project files the image carries from a checkout, as sorted relative POSIX paths.

    Raises:
        ConfigError: the checkout has none of the project's packages.
    """
    out = []
    for package in PACKAGES:
        top = source / package
        if not top.is_dir():
            continue
        for path in top.rglob("*"):
            rel = path.relative_to(source)
            if ("__pycache__" in rel.parts or path.is_symlink() or not path.is_file()
                    or not path.name.endswith(CODE_SUFFIXES)):
                continue
            out.append(rel.as_posix())
    if not out:
        raise ConfigError(f"no hushcc packages found in {source}")
    return sorted(out)


def copy_code(source: Path, root: Path) -> list[str]:
    """Copy the project's files from `source` into `root/opt/hushcc/code`; return their paths."""
    files = code_files(source)
    dest = app_root(root) / CODE_DIR
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target, follow_symlinks=False)
    return files


def write_text(root: Path, rel: str, text: str) -> None:
    """Write a UTF-8 file under the app root."""
    target = app_root(root) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text.encode())


def normalise(root: Path, source_date_epoch: int) -> None:
    """Bring the staging tree to the invariants in the module docstring.

    Raises:
        ConfigError: the tree holds a symlink or a special file.
    """
    for dirpath, dirnames, filenames in os.walk(root, topdown=True):
        here = Path(dirpath)
        for name in list(dirnames):
            if name == "__pycache__" or (name == "bin" and here.name == DEPS_DIR):
                shutil.rmtree(here / name)
                dirnames.remove(name)
        for name in filenames:
            path = here / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                rel = path.relative_to(root).as_posix()
                raise ConfigError(f"image content must be regular files: {rel}")
            if name.endswith((".pyc", ".pyo")):
                path.unlink()
    entry = app_root(root) / ENTRYPOINT
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        here.chmod(0o755)
        for name in filenames:
            path = here / name
            path.chmod(0o755 if path == entry else 0o644)
            os.utime(path, (source_date_epoch, source_date_epoch), follow_symlinks=False)
        for name in dirnames:
            os.utime(here / name, (source_date_epoch, source_date_epoch))
    os.utime(root, (source_date_epoch, source_date_epoch))


def check_no_host_paths(root: Path, host_paths: list[str]) -> None:
    """Refuse content that names a host path of the build (staging dir, checkout, venv, home).

    Raises:
        ConfigError: a file contains one of `host_paths`; names the first such file.
    """
    needles = sorted({p.encode() for p in host_paths if len(p) > 1}, key=len, reverse=True)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n in data for n in needles):
            rel = path.relative_to(root).as_posix()
            raise ConfigError(f"image file {rel} contains a host path of the build")
