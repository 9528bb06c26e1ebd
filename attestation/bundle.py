"""The attestation bundle (DESIGN.md "Attestation bundle"): format, key binding, building.

Wire format, JSON (`to_json` writes it canonically: sorted keys, no whitespace, UTF-8):

    {"version": 2, "node_id": hex, "key_config": b64, "not_before": T, "not_after": T,
     "cpu": {"type": "sev-snp" | "tdx" | "simulated", "evidence": b64, "certs": [b64 DER, ...]},
     "gpu": [{"type": "nvidia-h100" | "simulated", "evidence": b64, "certs": [b64, ...]}, ...],
     "release": {"entry": b64, "index": int, "checkpoint": text, "inclusion_proof": [b64, ...]},
     "nonce": hex}                     # optional: only in a per-request (`?nonce=`) bundle

* b64 is standard base64 with padding (RFC 4648 §4), checked strictly; hex is lowercase.
* T is RFC 3339 in exactly one form, `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), so the bytes
  bound below are unambiguous: `not_after_bytes` is those 20 ASCII characters.
* `node_id` is 64 hex digits in JSON, 32 bytes in `Bundle`: the SHA-256 of the node's long-term
  identity public key (DESIGN.md).
* `nonce` (extension, per-request freshness): 32 bytes chosen by the client, 64 hex digits.

Binding (DESIGN.md), with H = SHA-256 and `||` concatenation:

    report_data (64 bytes) = SHA-512("hushcc/attest/v2" || H(key_config) || H(canonical_gpu)
                                     || node_id || not_before_bytes || not_after_bytes [|| nonce])
    gpu nonce   (32 bytes) = H("hushcc/gpu/v2" || H(key_config) || node_id
                               || not_before_bytes || not_after_bytes [|| nonce])

where node_id is the 32 raw bytes, the timestamps are their exact 20 RFC 3339 bytes as they
appear in the JSON, `[|| nonce]` is present only when the bundle carries a nonce (so a
per-request bundle is bound to the client's nonce in both the CPU and every GPU report), and
`canonical_gpu` is the GPU list in bundle order, each field length-prefixed (u32 big-endian):

    canonical_gpu = u32(n) || for each entry: lp(type ASCII) || lp(evidence)
                                              || u32(len(certs)) || lp(cert) for each cert

Every field a verifier decides on is bound (v1 bound neither `not_before` nor `node_id`, so a
rewritten `not_before` defeated the age checks): `Binding` holds exactly those fields, and both
the node's builder and the client's verifier derive the two values from it. Version 1 bundles are
refused at parse.

Invariants: pure; malformed input raises `ProtocolError`; sizes are bounded by `Limits`.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hushcc.errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

ATTEST_LABEL = b"hushcc/attest/v2"
GPU_LABEL = b"hushcc/gpu/v2"
VERSION = 2
NODE_ID_SIZE = 32
CPU_TYPES = frozenset({"sev-snp", "tdx", "simulated"})
GPU_TYPES = frozenset({"nvidia-h100", "simulated"})
NONCE_SIZE = 32
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"version", "node_id", "key_config", "not_before", "not_after", "cpu", "gpu", "release"}


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits a parser enforces (bytes or counts)."""

    max_bundle: int = 1 << 20
    max_certs: int = 8
    max_gpus: int = 16
    max_proof: int = 64


@dataclass(frozen=True, slots=True)
class Evidence:
    """One TEE's evidence: its type, the raw evidence and its certificate chain (DER)."""

    type: str
    evidence: bytes
    certs: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Release:
    """The stapled transparency-log proof of the node's release entry."""

    entry: bytes
    index: int
    checkpoint: str
    inclusion_proof: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed attestation bundle."""

    node_id: bytes
    key_config: bytes
    not_before: datetime
    not_after: datetime
    cpu: Evidence
    gpu: tuple[Evidence, ...]
    release: Release
    nonce: bytes | None = None
    version: int = field(default=VERSION)

    @property
    def binding(self) -> Binding:
        """The bound fields of this bundle."""
        return Binding(self.key_config, self.node_id, self.not_before, self.not_after, self.nonce)

    @classmethod
    def from_json(cls, data: bytes, limits: Limits = Limits()) -> Bundle:
        """Parse and validate a bundle.

        Args:
            data: The JSON bytes.
            limits: Size limits.

        Returns:
            The bundle.

        Raises:
            ProtocolError: Not JSON, a missing or extra key, a wrong type, or too large.
        """
        if len(data) > limits.max_bundle:
            raise ProtocolError("attestation bundle is too large")
        try:
            doc = json.loads(data, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("attestation bundle is not JSON") from exc
        obj = _object(doc, "bundle", _KEYS, frozenset({"nonce"}))
        if obj["version"] != VERSION or isinstance(obj["version"], bool):
            raise ProtocolError("unsupported attestation bundle version")
        node_id = obj["node_id"]
        if not isinstance(node_id, str) or not _HEX64.fullmatch(node_id):
            raise ProtocolError("node_id must be 64 lowercase hex digits")
        nonce = None
        if "nonce" in obj:
            if not isinstance(obj["nonce"], str) or not _HEX64.fullmatch(obj["nonce"]):
                raise ProtocolError("nonce must be 64 lowercase hex digits")
            nonce = bytes.fromhex(obj["nonce"])
        gpus = obj["gpu"]
        if not isinstance(gpus, list) or len(gpus) > limits.max_gpus:
            raise ProtocolError("gpu must be a list of at most max_gpus entries")
        return cls(
            node_id=bytes.fromhex(node_id), key_config=_b64(obj["key_config"], "key_config"),
            not_before=parse_time(obj["not_before"]), not_after=parse_time(obj["not_after"]),
            cpu=_evidence(obj["cpu"], CPU_TYPES, limits),
            gpu=tuple(_evidence(g, GPU_TYPES, limits) for g in gpus),
            release=_release(obj["release"], limits), nonce=nonce,
        )

    def to_json(self) -> bytes:
        """Serialize canonically (sorted keys, no whitespace); `from_json` inverts it."""
        doc: dict[str, Any] = {
            "version": self.version, "node_id": self.node_id.hex(),
            "key_config": _e64(self.key_config), "not_before": format_time(self.not_before),
            "not_after": format_time(self.not_after), "cpu": _evidence_doc(self.cpu),
            "gpu": [_evidence_doc(g) for g in self.gpu],
            "release": {"entry": _e64(self.release.entry), "index": self.release.index,
                        "checkpoint": self.release.checkpoint,
                        "inclusion_proof": [_e64(p) for p in self.release.inclusion_proof]},
        }
        if self.nonce is not None:
            doc["nonce"] = self.nonce.hex()
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ProtocolError("attestation bundle repeats a JSON key")
    return out


def parse_time(value: object) -> datetime:
    """Parse the one accepted RFC 3339 form `YYYY-MM-DDTHH:MM:SSZ` (UTC).

    Raises:
        ProtocolError: Any other form.
    """
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise ProtocolError("time must be RFC 3339 YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ProtocolError("time is not a valid date") from exc


def format_time(when: datetime) -> str:
    """Format as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds; sub-seconds are dropped)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _object(doc: object, what: str, required: set[str],
            optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    missing, extra = required - set(doc), set(doc) - required - optional
    if missing or extra:
        raise ProtocolError(f"{what} keys differ: missing {sorted(missing)}, extra {sorted(extra)}")
    return doc


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a base64 string")
    try:
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError(f"{what} is not strict base64") from exc


def _e64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _b64_list(value: object, what: str, limit: int) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"{what} must be a list of at most {limit} base64 strings")
    return tuple(_b64(v, what) for v in value)


def _evidence(doc: object, types: frozenset[str], limits: Limits) -> Evidence:
    obj = _object(doc, "evidence", {"type", "evidence", "certs"})
    if obj["type"] not in types:
        raise ProtocolError(f"evidence type must be one of {sorted(types)}")
    return Evidence(obj["type"], _b64(obj["evidence"], "evidence"),
                    _b64_list(obj["certs"], "certs", limits.max_certs))


def _evidence_doc(ev: Evidence) -> dict[str, Any]:
    return {"type": ev.type, "evidence": _e64(ev.evidence), "certs": [_e64(c) for c in ev.certs]}


def _release(doc: object, limits: Limits) -> Release:
    obj = _object(doc, "release", {"entry", "index", "checkpoint", "inclusion_proof"})
    index, checkpoint = obj["index"], obj["checkpoint"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1 << 63:
        raise ProtocolError("release index must be a non-negative integer")
    if not isinstance(checkpoint, str):
        raise ProtocolError("release checkpoint must be text")
    return Release(_b64(obj["entry"], "entry"), index, checkpoint,
                   _b64_list(obj["inclusion_proof"], "inclusion_proof", limits.max_proof))


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def canonical_gpu_evidence(gpus: Sequence[Evidence]) -> bytes:
    """The canonical encoding of the GPU list that the CPU report binds (module docstring)."""
    out = [struct.pack(">I", len(gpus))]
    for g in gpus:
        out += [_lp(g.type.encode("ascii")), _lp(g.evidence), struct.pack(">I", len(g.certs))]
        out += [_lp(c) for c in g.certs]
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Binding:
    """The fields the evidence binds (module docstring): what a verifier's decisions rest on.

    Construction checks the sizes (node_id 32 bytes, nonce 32 bytes or None) and truncates the
    times to whole seconds, so the bound bytes are the ones the JSON carries.
    """

    key_config: bytes
    node_id: bytes
    not_before: datetime
    not_after: datetime
    nonce: bytes | None = None

    def __post_init__(self) -> None:
        """Check the sizes and normalise the times.

        Raises:
            ProtocolError: node_id is not 32 bytes or nonce is not 32 bytes.
        """
        if len(self.node_id) != NODE_ID_SIZE:
            raise ProtocolError("node_id must be 32 bytes")
        if self.nonce is not None and len(self.nonce) != NONCE_SIZE:
            raise ProtocolError("nonce must be 32 bytes")
        for name in ("not_before", "not_after"):
            object.__setattr__(self, name, parse_time(format_time(getattr(self, name))))

    def _tail(self) -> bytes:
        return (self.node_id + format_time(self.not_before).encode("ascii")
                + format_time(self.not_after).encode("ascii") + (self.nonce or b""))

    def gpu_nonce(self) -> bytes:
        """The 32-byte nonce every GPU report must carry (module docstring)."""
        return hashlib.sha256(GPU_LABEL + hashlib.sha256(self.key_config).digest()
                              + self._tail()).digest()

    def report_data(self, gpus: Sequence[Evidence]) -> bytes:
        """The 64-byte report_data the CPU evidence must carry (module docstring)."""
        return hashlib.sha512(ATTEST_LABEL + hashlib.sha256(self.key_config).digest()
                              + hashlib.sha256(canonical_gpu_evidence(gpus)).digest()
                              + self._tail()).digest()


def build_bundle(
    binding: Binding, *, cpu: Callable[[bytes], Evidence],
    gpus: Callable[[bytes], Sequence[Evidence]] | None, release: Release,
) -> Bundle:
    """Collect evidence in binding order and assemble a bundle (node side).

    The GPUs attest the GPU nonce first; then the CPU attests the report_data that binds the
    key config, those GPU reports, the node id, the validity window and the optional nonce.

    Args:
        binding: The bound fields (node id, key config, validity, optional client nonce).
        cpu: Maps report_data (64 bytes) to CPU evidence (configfs-tsm or simulated).
        gpus: Maps the GPU nonce (32 bytes) to every GPU's evidence (None: no GPU).
        release: The stapled log proof of this node's release.

    Returns:
        The bundle.
    """
    gpu_evidence = tuple(gpus(binding.gpu_nonce())) if gpus is not None else ()
    cpu_evidence = cpu(binding.report_data(gpu_evidence))
    return Bundle(binding.node_id, binding.key_config, binding.not_before, binding.not_after,
                  cpu_evidence, gpu_evidence, release, binding.nonce)
