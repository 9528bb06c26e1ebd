"""The verifier's policy: what a client accepts (debug, simulated TEEs, TCB, guest policy, ...).

A policy is a frozen value, loaded from TOML with every key checked (an unknown key, a wrong
type or a malformed value is a `ConfigError`, never ignored). Defaults are the strict ones:
debug refused, simulated TEEs refused, a GPU required, every SEV-SNP guest-policy bit checked,
a stapled checkpoint at most two days old, revocation required (outside the simulated TEE).

TOML keys (all optional):

```toml
allow_debug = false
allow_simulated = false
require_gpu = true
vmpl = 0                       # the report's VMPL must equal this
max_age_seconds = 86400        # now - not_before must not exceed this
max_validity_seconds = 604800  # not_after - not_before must not exceed this
allowed_measurements = ["hex of the 48-byte launch measurement", ...]  # empty: the log decides
log_key = "name+hash+base64"   # C2SP signed-note verifier key of the transparency log
log_witnesses = ["name+hash+base64", ...]  # witness cosignature verifier keys
log_witness_threshold = 1      # how many of them must have cosigned the stapled checkpoint
max_checkpoint_age_seconds = 172800  # the stapled checkpoint's log-signed timestamp (or a
                                     # witness's) must be at most this old
revocation = "required"        # or "best-effort". Unset: required for real TEEs, best-effort
                               # for simulated evidence (which has no CRL/OCSP). "required": a
                               # missing or stale AMD CRL / NVIDIA OCSP answer fails; "best-effort":
                               # it is reported as a WARNING (never as a pass), revoked still fails
[sev_snp_guest_policy]         # attestation.snp_guest_policy: every GUEST_POLICY bit
min_abi_major = 0              # firmware ABI the guest policy must require, at least
min_abi_minor = 0
allow_smt = true               # false: the SMT bit must be clear
require_single_socket = false  # true: the SINGLE_SOCKET bit must be set
allow_cxl = false              # true: the CXL_ALLOW bit may be set
require_mem_aes_256_xts = false
require_rapl_disabled = false
require_ciphertext_hiding = false
# (bit 17 set, bits 63:26 clear and MIGRATE_MA off are always required; debug: allow_debug)
[min_tcb]
bootloader = 0
tee = 0
snp = 0
microcode = 0
fmc = 0
```

Pure apart from `load_policy`, which reads one file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from attestation.snp_guest_policy import SnpGuestPolicy
from attestation.vcek import TcbVersion
from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

_BOOL_KEYS = ("allow_debug", "allow_simulated", "require_gpu")
_TCB_KEYS = ("bootloader", "tee", "snp", "microcode", "fmc")
_KEYS = frozenset({*_BOOL_KEYS, "vmpl", "max_age_seconds", "max_validity_seconds",
                   "allowed_measurements", "log_key", "min_tcb", "log_witnesses",
                   "log_witness_threshold", "max_checkpoint_age_seconds", "revocation",
                   "sev_snp_guest_policy"})
_GUEST_BOOLS = ("allow_smt", "require_single_socket", "allow_cxl", "require_mem_aes_256_xts",
                "require_rapl_disabled", "require_ciphertext_hiding")
REVOCATION_MODES = ("required", "best-effort")


@dataclass(frozen=True, slots=True)
class Policy:
    """What a verifier accepts. The defaults are strict."""

    allow_debug: bool = False
    allow_simulated: bool = False
    require_gpu: bool = True
    vmpl: int = 0
    min_tcb: TcbVersion = field(default_factory=lambda: TcbVersion(0, 0, 0, 0, 0))
    allowed_measurements: frozenset[bytes] = frozenset()
    max_age: timedelta = timedelta(days=1)
    max_validity: timedelta = timedelta(days=7)
    log_key: str | None = None
    log_witnesses: tuple[str, ...] = ()
    log_witness_threshold: int = 0
    max_checkpoint_age: timedelta = timedelta(days=2)
    revocation: str | None = None
    snp_guest: SnpGuestPolicy = field(default_factory=SnpGuestPolicy)

    def revocation_required(self, *, simulated: bool) -> bool:
        """Whether a missing or stale revocation source fails (module docstring)."""
        if self.revocation is None:
            return not simulated
        return self.revocation == "required"


def _int(value: object, name: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise ConfigError(f"policy key {name} must be an integer in 0..{upper}")
    return value


def policy_from_mapping(data: Mapping[str, object]) -> Policy:
    """Build a policy from parsed TOML, checking every key.

    Args:
        data: The TOML document as a mapping.

    Returns:
        The policy.

    Raises:
        ConfigError: An unknown key, a wrong type or a malformed value.
    """
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown policy key(s): {', '.join(unknown)}")
    kwargs = _scalars(data)
    if "min_tcb" in data:
        kwargs["min_tcb"] = _min_tcb(data["min_tcb"])
    if "allowed_measurements" in data:
        kwargs["allowed_measurements"] = _measurements(data["allowed_measurements"])
    if "revocation" in data:
        if data["revocation"] not in REVOCATION_MODES:
            raise ConfigError('policy key revocation must be "required" or "best-effort"')
        kwargs["revocation"] = data["revocation"]
    if "sev_snp_guest_policy" in data:
        kwargs["snp_guest"] = _guest(data["sev_snp_guest_policy"])
    kwargs.update(_witnesses(data))
    return Policy(**kwargs)  # type: ignore[arg-type]


def _witnesses(data: Mapping[str, object]) -> dict[str, object]:
    witnesses = data.get("log_witnesses", [])
    if not isinstance(witnesses, list) or not all(isinstance(w, str) and w for w in witnesses):
        raise ConfigError("policy key log_witnesses must be a list of verifier key strings")
    threshold = _int(data.get("log_witness_threshold", 1 if witnesses else 0),
                     "log_witness_threshold", len(witnesses))
    if witnesses and threshold == 0:
        raise ConfigError("log_witness_threshold must be at least 1 when witnesses are listed")
    return {"log_witnesses": tuple(witnesses), "log_witness_threshold": threshold}


def _scalars(data: Mapping[str, object]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for key in _BOOL_KEYS:
        if key in data:
            if not isinstance(data[key], bool):
                raise ConfigError(f"policy key {key} must be true or false")
            kwargs[key] = data[key]
    if "vmpl" in data:
        kwargs["vmpl"] = _int(data["vmpl"], "vmpl", 3)
    for key, attr in (("max_age_seconds", "max_age"), ("max_validity_seconds", "max_validity"),
                      ("max_checkpoint_age_seconds", "max_checkpoint_age")):
        if key in data:
            kwargs[attr] = timedelta(seconds=_int(data[key], key, 10 * 365 * 86400))
    if "log_key" in data:
        if not isinstance(data["log_key"], str) or not data["log_key"]:
            raise ConfigError("policy key log_key must be a non-empty string")
        kwargs["log_key"] = data["log_key"]
    return kwargs


def _guest(value: object) -> SnpGuestPolicy:
    if not isinstance(value, dict):
        raise ConfigError("policy key sev_snp_guest_policy must be a table")
    unknown = sorted(set(value) - {*_GUEST_BOOLS, "min_abi_major", "min_abi_minor"})
    if unknown:
        raise ConfigError(f"unknown sev_snp_guest_policy key(s): {', '.join(unknown)}")
    flags: dict[str, bool] = {}
    for key in _GUEST_BOOLS:
        if key in value:
            if not isinstance(value[key], bool):
                raise ConfigError(f"sev_snp_guest_policy.{key} must be true or false")
            flags[key] = value[key]
    abi = (_int(value.get("min_abi_major", 0), "sev_snp_guest_policy.min_abi_major", 255),
           _int(value.get("min_abi_minor", 0), "sev_snp_guest_policy.min_abi_minor", 255))
    return SnpGuestPolicy(min_abi=abi, **flags)


def _min_tcb(value: object) -> TcbVersion:
    if not isinstance(value, dict):
        raise ConfigError("policy key min_tcb must be a table")
    unknown = sorted(set(value) - set(_TCB_KEYS))
    if unknown:
        raise ConfigError(f"unknown min_tcb key(s): {', '.join(unknown)}")
    return TcbVersion(**{k: _int(value.get(k, 0), f"min_tcb.{k}", 255) for k in _TCB_KEYS})


def _measurements(value: object) -> frozenset[bytes]:
    if not isinstance(value, list):
        raise ConfigError("policy key allowed_measurements must be a list of hex strings")
    out: set[bytes] = set()
    for item in value:
        try:
            digest = bytes.fromhex(item) if isinstance(item, str) else b""
        except ValueError as exc:
            raise ConfigError("allowed_measurements entries must be hex") from exc
        if len(digest) != 48:
            raise ConfigError("allowed_measurements entries must be 48 bytes (96 hex digits)")
        out.add(digest)
    return frozenset(out)


def parse_policy(text: str) -> Policy:
    """Parse a TOML policy document.

    Args:
        text: The TOML text.

    Returns:
        The policy.

    Raises:
        ConfigError: Not TOML, or an invalid key or value.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy is not valid TOML: {exc}") from exc
    return policy_from_mapping(data)


def load_policy(path: Path) -> Policy:
    """Read and parse a TOML policy file.

    Args:
        path: The file.

    Returns:
        The policy.

    Raises:
        ConfigError: Unreadable, not TOML, or invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}") from exc
    return parse_policy(text)
