"""The node's keys: per-boot HPKE key epochs rotated with grace, and the node identity key.

Pure: time (`now`, an aware datetime) and randomness (`rng`) are parameters.

Invariants (RFC 9458 §6.4, §6.6; SECURITY.md G7, K5):
* HPKE private keys are generated in memory and never serialised here; nothing is written.
* Epoch `n` gets key id `n mod 256`; a new epoch starts every `interval`; the previous key keeps
  decrypting for `grace` after its successor starts, then it is dropped from the ring and every
  reference this module held is gone: its key id answers "unknown key" (422 `ohttp-key`).
* `grace < interval`, so at most two keys are live and their key ids differ.
* `node_id` is the hex SHA-256 of the identity public key (DESIGN.md), never of an HPKE key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hushcc.errors import ConfigError
from ohttp.keyconfig import GatewayKey
from ohttp.suites import AeadId, KdfId, SymmetricSuite

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_SUITES = (SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),
                  SymmetricSuite(KdfId.HKDF_SHA256, AeadId.CHACHA20_POLY1305))


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """How often HPKE keys rotate and how long a replaced key still decrypts."""

    interval: timedelta = timedelta(hours=1)
    grace: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        """Reject a schedule that would keep more than two keys or none."""
        if self.interval <= timedelta(0) or self.grace < timedelta(0):
            raise ConfigError("key rotation interval must be positive and grace not negative")
        if self.grace >= self.interval:
            raise ConfigError("key rotation grace must be shorter than the interval")


@dataclass(frozen=True, slots=True)
class Epoch:
    """One key epoch: its serial, key and validity (the bundle's not_before / not_after)."""

    serial: int
    key: GatewayKey
    not_before: datetime
    not_after: datetime

    @property
    def key_id(self) -> int:
        """The key id of this epoch's key config."""
        return self.key.config.key_id


class KeyRing:
    """The live HPKE key epochs: the current one and, during grace, its predecessor."""

    def __init__(self, policy: RotationPolicy, *, now: datetime, rng: Callable[[int], bytes],
                 suites: tuple[SymmetricSuite, ...] = DEFAULT_SUITES) -> None:
        """Start epoch 0 at `now`."""
        self.policy = policy
        self._rng = rng
        self._suites = suites
        self._epochs: list[Epoch] = [self._new_epoch(0, now)]

    def __repr__(self) -> str:
        """Key ids only."""
        return f"KeyRing(key_ids={[e.key_id for e in self._epochs]})"

    def _new_epoch(self, serial: int, start: datetime) -> Epoch:
        key = GatewayKey.generate(serial % 256, self._suites, rng=self._rng)
        end = start + self.policy.interval + self.policy.grace
        return Epoch(serial, key, start, end)

    @property
    def current(self) -> Epoch:
        """The newest epoch (the one bundles advertise)."""
        return self._epochs[-1]

    @property
    def epochs(self) -> tuple[Epoch, ...]:
        """The live epochs, oldest first."""
        return tuple(self._epochs)

    def keys(self) -> dict[int, GatewayKey]:
        """The keys that decrypt now, by key id."""
        return {e.key_id: e.key for e in self._epochs}

    def epoch_serial(self, key_id: int) -> int | None:
        """The serial of the live epoch with `key_id` (None if none is live)."""
        return next((e.serial for e in self._epochs if e.key_id == key_id), None)

    def next_change(self) -> datetime:
        """When `tick` next has something to do."""
        rotate = self.current.not_before + self.policy.interval
        if len(self._epochs) > 1:
            return min(rotate, self._epochs[0].not_before + self.policy.interval
                       + self.policy.grace)
        return rotate

    def tick(self, now: datetime) -> tuple[list[Epoch], list[Epoch]]:
        """Rotate and retire as the schedule says at `now`.

        Returns:
            (new epochs, retired epochs); a retired epoch's key is no longer in the ring.
        """
        new: list[Epoch] = []
        while now >= self.current.not_before + self.policy.interval:
            start = self.current.not_before + self.policy.interval
            epoch = self._new_epoch(self.current.serial + 1, start)
            self._epochs.append(epoch)
            new.append(epoch)
        retired = [e for e in self._epochs[:-1]
                   if now >= e.not_before + self.policy.interval + self.policy.grace]
        self._epochs = [e for e in self._epochs if e not in retired]
        return new, retired


class NodeIdentity:
    """The node's long-term identity key (Ed25519); `node_id` names the node everywhere."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        """Wrap an identity private key."""
        self._private = private
        public = private.public_key().public_bytes_raw()
        self.public_key = public
        self.node_id = hashlib.sha256(public).hexdigest()

    def __repr__(self) -> str:
        """The node id only."""
        return f"NodeIdentity(node_id={self.node_id})"

    @classmethod
    def generate(cls, rng: Callable[[int], bytes]) -> NodeIdentity:
        """A fresh identity from `rng` (32 bytes)."""
        return cls(Ed25519PrivateKey.from_private_bytes(rng(32)))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> NodeIdentity:
        """An identity from its 32-byte raw private key.

        Raises:
            ConfigError: wrong length.
        """
        if len(raw) != 32:
            raise ConfigError("a node identity key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))
