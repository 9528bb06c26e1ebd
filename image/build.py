"""`image build`: assemble, normalise, pack, verity-format and describe the node image (I/O shell).

Steps: stage the code, the locked dependencies, the model, the configuration and the
entrypoint under `opt/hushcc`; normalise (`image.content`); refuse host paths; pack with
mksquashfs (reproducible options); pad to whole 4 KiB blocks; `veritysetup format` with a salt
and UUID derived from the image digest, cross-checked against the pure `image.verity`; write
`manifest.json` (`image.manifest`) and `inputs.json` (the host paths of the inputs, for
`image verify`; never part of the image or the manifest).

Invariants: the output depends only on the inputs and SOURCE_DATE_EPOCH — not on the build
directory, TMPDIR, umask, locale, hostname or the inputs' mtimes (SECURITY.md B1), nor on
whether the model's conversion came from the cache. The self-measurement is what a node started
from the image computes at start (`node.service`: `measure_node` over its code under
`opt/hushcc/code`, the model under `opt/hushcc/model` and the configuration
`opt/hushcc/node.toml` the entrypoint passes), so a simulated-TEE node from this content attests
exactly the logged `sim` value (`node_measurement`), and one changed byte in any code, model or
configuration file changes it. The dependencies are pinned by the image digest, the verity root
and the lock's digest in the manifest, not by `sim` (the node does not hash its site-packages).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.measure import Measurement, measure_node, measure_sources
from hushcc.errors import ConfigError
from hushcc.files import read_text, sha256_file
from image import content, deps, manifest, tools, verity
from image.model import check_model, stage_model

if TYPE_CHECKING:
    from collections.abc import Iterator

    from image.cache import Cache
    from image.progress import Progress

INPUTS_FILE = "inputs.json"


@dataclass(frozen=True, slots=True)
class BuildInputs:
    """Everything an image is built from (paths on the build host)."""

    source: Path
    model: Path
    source_date_epoch: int
    lock: Path | None = None
    wheels: Path | None = None
    config: Path | None = None
    snp: dict[str, str] | None = None  # sev-snp-measure options (ovmf, kernel, initrd, ...)

    def to_json(self) -> bytes:
        """The inputs as JSON (absolute paths), for `image verify` to rebuild from."""
        value: dict[str, Any] = {
            "source": str(self.source.resolve()), "model": str(self.model.resolve()),
            "source_date_epoch": self.source_date_epoch,
            "lock": str(self.lock.resolve()) if self.lock else None,
            "wheels": str(self.wheels.resolve()) if self.wheels else None,
            "config": str(self.config.resolve()) if self.config else None,
            "snp": self.snp}
        return (json.dumps(value, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> BuildInputs:
        """Parse `inputs.json`.

        Raises:
            ConfigError: malformed.
        """
        try:
            v = json.loads(data)
            return cls(Path(v["source"]), Path(v["model"]), int(v["source_date_epoch"]),
                       Path(v["lock"]) if v["lock"] else None,
                       Path(v["wheels"]) if v["wheels"] else None,
                       Path(v["config"]) if v["config"] else None, v.get("snp"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{INPUTS_FILE} is malformed") from exc


def all_files(root: Path) -> list[str]:
    """Every regular file under `root`, as sorted relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink())


def node_measurement(app_root: Path) -> Measurement:
    """The self-measurement of a node running from `app_root`.

    The same call as at node start: `measure_node(source_root(), model, config)`, where
    `source_root()` is the folder holding the project's packages (`app_root/code` in the
    image) and the entrypoint passes `--model app_root/model --config app_root/node.toml`.
    """
    measured, _ = measure_node(app_root / content.CODE_DIR, app_root / content.MODEL_DIR,
                               app_root / content.CONFIG_FILE)
    return measured


def _blocks(path: Path, progress: Progress) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(verity.BLOCK_SIZE):
            progress.advance(len(block))
            yield block


def stage(inputs: BuildInputs, root: Path, progress: Progress, cache: Cache | None = None) -> str:
    """Assemble and normalise the root filesystem in `root`; return the lock text.

    `cache` (optional) holds the model's GGUF -> safetensors conversion (`image.cache`).

    Raises:
        ConfigError: a missing input, a failed install, or content that breaks an invariant.
    """
    app = content.app_root(root)
    progress.step("code", None)
    content.copy_code(inputs.source, root)
    lock_text = ""
    if inputs.lock is not None:
        if inputs.wheels is None:
            raise ConfigError("--lock needs --wheels (the directory holding the locked wheels)")
        lock_text = read_text(inputs.lock, "--lock file")
        deps.parse_lock(lock_text)
        progress.step("dependencies (pip --require-hashes)", None)
        deps.install(inputs.lock, inputs.wheels, app / content.DEPS_DIR)
    (app / content.DEPS_DIR).mkdir(parents=True, exist_ok=True)
    content.write_text(root, content.LOCK_FILE, lock_text)
    progress.step("model (safetensors)", None)
    stage_model(inputs.model, app / content.MODEL_DIR, cache)
    config = (read_text(inputs.config, "--config file") if inputs.config
              else content.DEFAULT_CONFIG)
    content.write_text(root, content.CONFIG_FILE, config)
    content.write_text(root, content.ENTRYPOINT, content.ENTRYPOINT_TEXT)
    progress.step("normalise + host-path check", None)
    content.normalise(root, inputs.source_date_epoch)
    hosts = [str(root.resolve()), str(inputs.source.resolve()), sys.prefix,
             str(inputs.model.resolve().parent), tempfile.gettempdir()]
    if inputs.wheels is not None:
        hosts.append(str(inputs.wheels.resolve()))
    content.check_no_host_paths(root, [h for h in hosts if h not in {"/", "/tmp"}])  # noqa: S108
    return lock_text


def describe(root: Path) -> list[manifest.FileEntry]:
    """The manifest's file list of a staged or extracted root filesystem."""
    out = []
    for rel in all_files(root):
        path = root / rel
        st = path.lstat()
        out.append(manifest.FileEntry(rel, st.st_mode & 0o7777, st.st_size, sha256_file(path)))
    return out


def check_inputs(inputs: BuildInputs, out: Path) -> None:
    """Check every input and `out` before any work is done or anything is written.

    Raises:
        ConfigError: a missing tool, source, model, lock, wheels or SEV-SNP file; a config or
            lock that is not UTF-8 (or a lock line not pinned); `out` a file or not empty.
    """
    for tool in ("mksquashfs", "veritysetup"):
        tools.find_tool(tool)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty")
    if not inputs.source.is_dir():
        raise ConfigError(f"--source is not a directory: {inputs.source}")
    _check_files(inputs)
    check_model(inputs.model)


def _check_files(inputs: BuildInputs) -> None:
    if inputs.config is not None:
        read_text(inputs.config, "--config file")
    if inputs.lock is not None:
        if inputs.wheels is None:
            raise ConfigError("--lock needs --wheels (the directory holding the locked wheels)")
        deps.parse_lock(read_text(inputs.lock, "--lock file"))
    if inputs.wheels is not None and not inputs.wheels.is_dir():
        raise ConfigError(f"--wheels is not a directory: {inputs.wheels}")
    for name, value in sorted((inputs.snp or {}).items()):
        if name in {"ovmf", "kernel", "initrd"} and value and not Path(value).is_file():
            raise ConfigError(f"--{name} not found (or not a file): {value}")


def build(inputs: BuildInputs, out: Path, progress: Progress,
          cache: Cache | None = None) -> dict[str, Any]:
    """Build the image into `out` (created; must be empty or absent) and return the manifest.

    The output is the same with or without `cache`, warm or cold (B1).

    Raises:
        ConfigError: an input is missing or invalid, or a tool is missing or fails.
    """
    check_inputs(inputs, out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hushcc-image-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        lock_text = stage(inputs, root, progress, cache)
        progress.step("file list (sha256 of every file)", None)
        files = describe(root)
        forbidden = manifest.scan_forbidden([f.path for f in files])
        if forbidden:
            path, kind = forbidden[0]
            raise ConfigError(f"the image would hold a {kind}: {path} (SECURITY.md B3)")
        progress.step("measurements", None)
        app = content.app_root(root)
        code_list = all_files(app / content.CODE_DIR)
        model_list = all_files(app / content.MODEL_DIR)
        code = measure_sources(app / content.CODE_DIR, code_list)[0]
        model = measure_sources(app / content.MODEL_DIR, model_list)[0]
        sim = node_measurement(app)
        image = out / manifest.IMAGE_FILE
        progress.step("squashfs (mksquashfs, zstd)", None)
        tools.mksquashfs(root, image, inputs.source_date_epoch)
    with image.open("ab") as f:  # whole verity blocks (mksquashfs pads to 4 KiB already)
        f.write(bytes(-image.stat().st_size % verity.BLOCK_SIZE))
    digest = sha256_file(image)
    salt = verity.content_salt(bytes.fromhex(digest))
    uuid = verity.content_uuid(salt)
    hash_file = out / manifest.HASH_FILE
    progress.step("dm-verity (veritysetup)", None)
    root_hash = tools.veritysetup_format(image, hash_file, salt, uuid)
    progress.step("dm-verity (pure-Python cross-check)", image.stat().st_size)
    tree = verity.compute_tree(_blocks(image, progress), salt, uuid)
    if tree.root_hash != root_hash or tree.hash_device != hash_file.read_bytes():
        raise ConfigError("veritysetup and the pure dm-verity calculator disagree")
    progress.step("manifest", None)
    measurements = {"sim": sim.hex}
    launch = None
    if inputs.snp:
        from image.snp import launch_description, launch_digest  # noqa: PLC0415

        measurements["sev-snp"] = launch_digest(inputs.snp, tree.cmdline())
        launch = launch_description(inputs.snp, tree.cmdline())
    doc: dict[str, Any] = {
        "schema": manifest.SCHEMA,
        "source_date_epoch": inputs.source_date_epoch,
        "image": {"file": manifest.IMAGE_FILE, "digest": digest,
                  "size": image.stat().st_size},
        "verity": {"hash_file": manifest.HASH_FILE, "hash_digest": sha256_file(hash_file),
                   "root_hash": root_hash.hex(), "salt": salt.hex(), "uuid": uuid,
                   "data_blocks": tree.data_blocks, "cmdline": tree.cmdline()},
        "code": {"digest": code.hex, "files": len(code_list)},
        "model": {"digest": model.hex, "files": len(model_list)},
        "dependencies": {"lock_digest": hashlib.sha256(lock_text.encode()).hexdigest(),
                         "packages": len(deps.parse_lock(lock_text))},
        "measurements": measurements,
        **({"sev_snp_launch": launch} if launch else {}),
        "files": [f.to_list() for f in files],
    }
    (out / manifest.MANIFEST_FILE).write_bytes(manifest.dumps(doc))
    (out / INPUTS_FILE).write_bytes(inputs.to_json())
    progress.step("done", None)
    return doc
