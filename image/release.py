"""`image publish` and `image verify`: the image's release in the transparency log (I/O shell).

* `publish` turns `manifest.json` into a `hushcc.release/v1` entry, signs it with the release
  key, `POST /add`s it, and stores `release.json` beside the image: `{entry, index, checkpoint,
  inclusion_proof}` (base64), the stapled-release form `hushcc attest simulate --release` and
  the attestation bundle take.
* `verify` is the auditor's check, every step reported, failing closed: (1) the published
  squashfs and hash tree match the manifest, and the pure dm-verity calculator gives the same
  root; (2) a rebuild from the same inputs in a fresh temporary directory gives the same
  manifest, file by file (the first differing file is named); (3) the logged entry is the
  manifest's entry and lists the rebuilt self-measurement; (4) it is included in the stored
  checkpoint, signed by the pinned log key; (5) the log's current checkpoint is consistent
  with the stored one.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hushcc.errors import ConfigError, HushError, ProtocolError, VerificationError
from hushcc.files import sha256_file
from image import manifest, verity
from image.build import BuildInputs, build

if TYPE_CHECKING:
    from image.progress import Progress
    from transparency_log.note import Verifier

RELEASE_FILE = "release.json"
_TIMEOUT = 30


def _http(url: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        raise HushError(f"the log answered HTTP {exc.code} for {url}") from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        raise HushError(f"cannot reach the log at {url}") from exc


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and parse `manifest.json` in an image folder.

    Raises:
        ProtocolError: it is not a canonical `hushcc.image/v1` manifest.
    """
    return manifest.loads((folder / manifest.MANIFEST_FILE).read_bytes())


def publish(folder: Path, log_url: str, release_key: Path, log_key: str | None) -> int:
    """Sign, log and staple the image's release entry; return its index.

    Raises:
        HushError: unreadable manifest or key, a log error, or (with `log_key`) a returned
            inclusion proof that does not verify.
    """
    from transparency_log.client import verify_stapled_inclusion  # noqa: PLC0415
    from transparency_log.entry import sign_entry  # noqa: PLC0415
    from transparency_log.keys import read_signer, read_verifier  # noqa: PLC0415

    entry = manifest.release_entry(read_manifest(folder))
    body = sign_entry(entry, read_signer(str(release_key)))
    try:
        answer = json.loads(_http(log_url.rstrip("/") + "/add", body))
        index, note = int(answer["index"]), str(answer["checkpoint"])
        proof = [base64.b64decode(h, validate=True) for h in answer["inclusion_proof"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError("the log's answer to /add is malformed") from exc
    if log_key is not None:
        verify_stapled_inclusion(entry.canonical, index, note, proof,
                                 log_verifier_key=read_verifier(log_key))
    stapled = {"entry": base64.b64encode(entry.canonical).decode(), "index": index,
               "checkpoint": note, "inclusion_proof": [base64.b64encode(h).decode()
                                                       for h in proof]}
    (folder / RELEASE_FILE).write_text(json.dumps(stapled, sort_keys=True, indent=2) + "\n",
                                       encoding="utf-8")
    return index


@dataclass
class Report:
    """The verification steps, in order: (name, passed, detail)."""

    steps: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, *, passed: bool, detail: str) -> None:
        """Record a step."""
        self.steps.append((name, passed, detail))

    @property
    def ok(self) -> bool:
        """Whether every step passed (and there was at least one)."""
        return bool(self.steps) and all(p for _, p, _ in self.steps)

    def render(self) -> str:
        """A readable table of the steps."""
        lines = [f"{'ok  ' if p else 'FAIL'}  {name}: {detail}" for name, p, detail in self.steps]
        lines.append("image verified" if self.ok else "image verification FAILED")
        return "\n".join(lines)


def check_artefacts(folder: Path, doc: dict[str, Any], report: Report) -> None:
    """Step (1): the squashfs, the hash tree and the pure verity root agree with the manifest."""
    image = folder / manifest.IMAGE_FILE
    got = sha256_file(image)
    report.add("image digest", passed=got == doc["image"]["digest"], detail=got)
    salt = bytes.fromhex(doc["verity"]["salt"])
    tree = verity.compute_for_bytes(image.read_bytes(), salt, doc["verity"]["uuid"])
    same_tree = tree.hash_device == (folder / manifest.HASH_FILE).read_bytes()
    report.add("dm-verity root (pure recomputation)",
               passed=tree.root_hash.hex() == doc["verity"]["root_hash"] and same_tree,
               detail=tree.root_hash.hex() + ("" if same_tree else "; hash file differs"))


def rebuild(folder: Path, inputs: BuildInputs, doc: dict[str, Any], report: Report,
            progress: Progress) -> dict[str, Any]:
    """Step (2): rebuild in a fresh temporary directory and compare, naming the first difference.

    Returns:
        The rebuilt manifest.
    """
    with tempfile.TemporaryDirectory(prefix="hushcc-rebuild-") as tmp:
        again = build(inputs, Path(tmp) / "out", progress)
        difference = manifest.first_difference(doc, again)
        report.add("rebuild from the same inputs", passed=difference is None,
                   detail=difference or f"identical ({len(again['files'])} files, "
                   f"image {again['image']['digest'][:16]}...)")
        if difference is not None:
            diff = diffoscope(folder / manifest.IMAGE_FILE, Path(tmp) / "out" / manifest.IMAGE_FILE)
            if diff:
                report.add("diffoscope", passed=False, detail="\n" + diff)
    return again


def diffoscope(a: Path, b: Path, limit: int = 8000) -> str | None:
    """Diffoscope's text report on two images, when diffoscope is on PATH (else None).

    It unpacks both squashfs images and diffs them file by file (superblock, listing, then
    each differing file's contents); the report is cut at `limit` characters.
    """
    tool = shutil.which("diffoscope")
    if tool is None:
        return None
    argv = [tool, "--text", "-", "--exclude-directory-metadata", "yes", str(a), str(b)]
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=300)  # noqa: S603
    except subprocess.TimeoutExpired:
        return "(diffoscope ran past 300 s)"
    return done.stdout.decode(errors="replace")[:limit] or "(diffoscope printed nothing)"


@dataclass(frozen=True, slots=True)
class LogPin:
    """The log an auditor checks: its base URL and the verifier key they pin."""

    url: str
    key: Verifier


def check_log(folder: Path, doc: dict[str, Any], rebuilt: dict[str, Any], log: LogPin,
              report: Report) -> None:
    """Steps (3)-(5): the logged entry, its inclusion, and the log's consistency."""
    from transparency_log.client import (  # noqa: PLC0415
        LogTrust,
        check_consistency,
        verify_checkpoint,
        verify_entry_measurement,
        verify_stapled_inclusion,
    )

    try:
        stapled = json.loads((folder / RELEASE_FILE).read_text(encoding="utf-8"))
        entry = base64.b64decode(stapled["entry"], validate=True)
        index, note = int(stapled["index"]), str(stapled["checkpoint"]).encode()
        proof = [base64.b64decode(h, validate=True) for h in stapled["inclusion_proof"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{RELEASE_FILE} is missing or malformed: run `image publish`") from exc
    expected = manifest.release_entry(doc).canonical
    measured = rebuilt["measurements"]["sim"]
    try:
        verify_entry_measurement(entry, measured)
        same = entry == expected
    except VerificationError:
        same = False
    report.add("logged entry = manifest, lists the rebuilt measurement", passed=same,
               detail=f"sim {measured[:16]}...")
    trust = LogTrust(log.key, log.key.name)
    try:
        old = verify_stapled_inclusion(entry, index, note, proof, log_verifier_key=log.key)
        report.add("inclusion in the stored checkpoint", passed=True,
                   detail=f"index {index} of {old.size}")
        current = _http(log.url.rstrip("/") + "/checkpoint")
        new = verify_checkpoint(current, trust)
        consistency: list[bytes] = []
        if 0 < old.size < new.size:
            answer = json.loads(_http(f"{log.url.rstrip('/')}/proof/consistency"
                                      f"?from={old.size}&to={new.size}"))
            consistency = [base64.b64decode(h, validate=True) for h in answer["hashes"]]
        check_consistency(note, old, current, new, consistency)
        report.add("log checkpoint consistent with the stored one", passed=True,
                   detail=f"size {old.size} -> {new.size}")
    except (VerificationError, ProtocolError, ValueError, KeyError) as exc:
        report.add("log", passed=False, detail=str(exc) or type(exc).__name__)


def verify(folder: Path, inputs: BuildInputs, log: LogPin, progress: Progress) -> Report:
    """Run every step of the auditor's check and return the report (module docstring)."""
    report = Report()
    doc = read_manifest(folder)
    check_artefacts(folder, doc, report)
    rebuilt = rebuild(folder, inputs, doc, report, progress)
    check_log(folder, doc, rebuilt, log, report)
    return report
