"""A content-addressed cache of what the build derives from its inputs, checked on every use.

Used for the model's GGUF -> safetensors conversion (`image.model`), the one derived step that
is slow and depends only on the source file's bytes and the converter's versions. Layout:

    CACHE/<kind>/<key>/files/...     the derived files
    CACHE/<kind>/<key>/index.json    {"schema", "kind", "key", "files": {relative path: sha256}}

`key` is a SHA-256 over a domain string, the source's SHA-256 and the converter's identity
(`cache_key`), so a changed source or a changed converter version is a different entry.

Invariants:
* An entry is published atomically: written into a fresh sibling directory, indexed, then
  renamed into place; an interrupted build never leaves a half entry under a key.
* An entry is never trusted blindly: on every use each file is hashed again and must equal the
  index, with no file missing and none extra, else the entry is deleted and made again (a damaged
  cache costs time, never content). The cache root must be a directory owned by this user and
  not writable by group or others (ConfigError otherwise).
* What the cache cannot prove is that an entry is what the converter *would* produce: `image
  verify` (the auditor's rebuild) therefore never uses a cache, so an entry planted on a
  builder's machine gives a manifest that the auditor's cold rebuild does not reproduce.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError
from hushcc.files import sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable

SCHEMA = "hushcc.image-cache/v1"
INDEX = "index.json"
FILES = "files"


def cache_key(domain: str, source_digest: str, identity: dict[str, str]) -> str:
    """The entry key: SHA-256 over the domain, the source digest and the converter identity."""
    text = json.dumps({"domain": domain, "source": source_digest, "identity": identity},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def default_root() -> Path:
    """`$XDG_CACHE_HOME/hushcc/image`, else `~/.cache/hushcc/image`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hushcc" / "image"


def _index(files_dir: Path) -> dict[str, str]:
    out = {}
    for path in sorted(files_dir.rglob("*")):
        rel = path.relative_to(files_dir).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ConfigError(f"cache entry holds a link or special file: {rel}")
        if path.is_file():
            out[rel] = sha256_file(path)
    return out


class Cache:
    """One cache root (module docstring)."""

    def __init__(self, root: Path) -> None:
        """Use `root` (created 0700 if absent).

        Raises:
            ConfigError: `root` is not a directory, not ours, or group/other-writable.
        """
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = root.stat()
        except OSError as exc:
            raise ConfigError(f"--cache {root} cannot be created") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"--cache {root} is not a directory")
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise ConfigError(f"--cache {root} must be owned by this user and not writable "
                              "by group or others")
        self.root = root

    def has(self, kind: str, key: str) -> bool:
        """Whether an entry exists (not yet checked: `materialise` checks it)."""
        return (self.root / kind / key / INDEX).is_file()

    def _indexed(self, entry: Path, kind: str, key: str) -> dict[str, str] | None:
        try:
            doc = json.loads((entry / INDEX).read_bytes())
        except (OSError, ValueError):
            return None
        expected = {"schema": SCHEMA, "kind": kind, "key": key}
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, dict) or not files or any(doc.get(k) != v
                                                            for k, v in expected.items()):
            return None
        return {str(k): str(v) for k, v in files.items()}

    def materialise(self, kind: str, key: str, make: Callable[[Path], None],
                    dest: Path) -> bool:
        """Copy the checked entry `kind/key` into `dest` (created), making it first if needed.

        `make(folder)` writes the derived files into an empty `folder`. Returns whether a
        valid entry was already there (a hit). On a hit the copied files are hashed and
        must equal the index (so what is staged is what was indexed); otherwise the copy and
        the entry are removed and the entry is made again.

        Raises:
            ConfigError: what `make` raises, or the cache cannot be written.
        """
        entry = self.root / kind / key
        files = self._indexed(entry, kind, key)
        if files is not None and (entry / FILES).is_dir():
            shutil.copytree(entry / FILES, dest, copy_function=shutil.copyfile, symlinks=True)
            try:
                if _index(dest) == files:
                    return True
            except ConfigError:
                pass
            shutil.rmtree(dest)
        self._make(entry, kind, key, make)
        shutil.copytree(entry / FILES, dest, copy_function=shutil.copyfile)
        return False

    def _make(self, entry: Path, kind: str, key: str, make: Callable[[Path], None]) -> None:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=entry.parent))
        try:
            make(work / FILES)
            doc = {"schema": SCHEMA, "kind": kind, "key": key, "files": _index(work / FILES)}
            (work / INDEX).write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n",
                                      encoding="utf-8")
            if entry.exists():
                shutil.rmtree(entry)
            work.rename(entry)
        except OSError as exc:
            raise ConfigError(f"cannot write the cache entry {kind}/{key[:16]}") from exc
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
