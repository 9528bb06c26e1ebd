"""The image manifest (`hushcc.image/v1`), its release entry, comparison and the B3 scan (pure).

`manifest.json` is JSON with sorted keys, two-space indentation and a final newline, so equal
manifests are equal bytes. It names no host path. Fields:
    schema, source_date_epoch,
    image:  {file, digest (sha256 hex of the squashfs), size},
    verity: {hash_file, hash_digest, root_hash, salt, uuid, data_blocks, cmdline},
    code, model: {digest (hushcc-measure/v1 SHA-384 over those files), files},
    dependencies: {lock_digest (sha256 of the lock), packages},
    measurements: {"sim": the node's self-measurement, optionally "sev-snp": launch digest},
    sev_snp_launch (with "sev-snp" only): {vcpus, vcpu_type, guest_features, ovmf_sha256,
        kernel_sha256, initrd_sha256, cmdline}: what that launch digest covers,
    files: [[path, mode (octal), size, sha256 hex], ...] every regular file, sorted by path.

`release_entry` maps a manifest to the `hushcc.release/v1` entry the log holds; `first_difference`
names the first file (or field) in which two manifests differ; `scan_forbidden` is SECURITY.md B3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from hushcc.errors import ConfigError, ProtocolError
from transparency_log.entry import SCHEMA as RELEASE_SCHEMA
from transparency_log.entry import ReleaseEntry

SCHEMA = "hushcc.image/v1"
IMAGE_FILE = "rootfs.squashfs"
HASH_FILE = "rootfs.verity"
MANIFEST_FILE = "manifest.json"

# SECURITY.md B3: no way in, no way to inspect, no way to change what runs. A file whose name
# is one of these programs (wherever it lies: `usr/bin/sh`, `etc/.../getty@.service`), or a
# Python package of this kind installed at the top of a site-packages directory, is refused.
FORBIDDEN = {
    "shell": ("sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "ash", "fish",
              "busybox", "toybox"),
    "remote login": ("sshd", "ssh", "dropbear", "telnetd", "in.telnetd", "rshd", "cloud-init"),
    "getty": ("getty", "agetty", "mingetty", "serial-getty@.service", "getty@.service", "login"),
    "package manager": ("apt", "apt-get", "dpkg", "rpm", "yum", "dnf", "apk", "pip", "pip3",
                        "conda", "snap"),
    "debugger": ("gdb", "gdbserver", "lldb", "strace", "ltrace", "perf", "bpftrace"),
    "compiler": ("gcc", "cc", "g++", "c++", "clang", "tcc", "ld", "as", "rustc", "go", "cython"),
}
FORBIDDEN_PACKAGES = {"pip": "package manager", "ensurepip": "package manager",
                      "conda": "package manager", "Cython": "compiler", "pyximport": "compiler",
                      "pdb": "debugger", "debugpy": "debugger", "pydevd": "debugger"}
_SITE = "site-packages"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One regular file of the root filesystem."""

    path: str
    mode: int
    size: int
    sha256: str

    def to_list(self) -> list[str | int]:
        """The manifest's `[path, mode, size, sha256]` form (mode as octal text)."""
        return [self.path, f"{self.mode:04o}", self.size, self.sha256]


def dumps(manifest: dict[str, Any]) -> bytes:
    """The manifest's one byte encoding: sorted keys, indent 2, final newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def loads(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes; they must be a `hushcc.image/v1` object in its one encoding.

    Raises:
        ProtocolError: not JSON, not the schema, or not in the canonical encoding.
    """
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("manifest.json is not JSON") from exc
    if not isinstance(value, dict) or value.get("schema") != SCHEMA:
        raise ProtocolError(f"manifest.json is not a {SCHEMA} manifest")
    if dumps(value) != data:
        raise ProtocolError("manifest.json is not in its canonical encoding")
    return value


def release_entry(manifest: dict[str, Any]) -> ReleaseEntry:
    """The `hushcc.release/v1` entry for a manifest (what `image publish` signs and logs).

    Raises:
        ConfigError: the manifest lacks a field the entry needs.
    """
    try:
        image, verity = manifest["image"], manifest["verity"]
        value = {
            "schema": RELEASE_SCHEMA,
            "image": {"digest": image["digest"], "size": image["size"],
                      "verity_root": verity["root_hash"], "verity_salt": verity["salt"],
                      "verity_hash_digest": verity["hash_digest"],
                      "cmdline": verity["cmdline"]},
            "measurements": dict(manifest["measurements"]),
            "model": {"digest": manifest["model"]["digest"],
                      "files": manifest["model"]["files"]},
            "source": {"code_digest": manifest["code"]["digest"],
                       "lock_digest": manifest["dependencies"]["lock_digest"],
                       "source_date_epoch": manifest["source_date_epoch"]},
        }
        return ReleaseEntry.from_value(value)
    except (KeyError, TypeError, ProtocolError) as exc:
        raise ConfigError("manifest.json lacks what a release entry needs") from exc


def _files(manifest: dict[str, Any]) -> dict[str, list[Any]]:
    return {str(row[0]): row for row in manifest.get("files", [])}


def first_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """Name the first difference between two manifests, or None when they are equal.

    Files are compared first (by sorted path), so a changed file is named rather than the
    digests that follow from it; then every other field in sorted order.
    """
    want, got = _files(expected), _files(actual)
    for path in sorted(set(want) | set(got)):
        if path not in got:
            return f"file {path} is missing from the rebuild"
        if path not in want:
            return f"file {path} is only in the rebuild"
        if want[path] != got[path]:
            return f"file {path} differs"
    for key in sorted(set(expected) | set(actual)):
        if key != "files" and expected.get(key) != actual.get(key):
            return f"manifest field {key} differs"
    return None


def scan_forbidden(paths: list[str]) -> list[tuple[str, str]]:
    """List every (path, kind) that names a forbidden program (SECURITY.md B3).

    Kinds: a shell, remote login, getty, package manager, debugger or compiler, as a file
    name anywhere or as a top-level package (or module) in a site-packages directory.
    """
    kinds = {name: kind for kind, names in FORBIDDEN.items() for name in names}
    found = []
    for path in paths:
        parts = PurePosixPath(path).parts
        kind = kinds.get(parts[-1])
        for i, part in enumerate(parts[:-1]):
            if kind is None and part == _SITE:
                top = parts[i + 1].removesuffix(".py")
                kind = FORBIDDEN_PACKAGES.get(top)
        if kind is not None:
            found.append((path, kind))
    return found
