"""The node's attestation: a fresh bundle per key epoch (and per client nonce), release stapling.

Bundles are built with attestation's own builder (`attestation.simulated_node.simulated_bundle`
for the simulated TEE); this module only decides what goes in: the epoch's key config and
validity, the node id, the self-measurement and the stapled release proof.

* `Attester` is pure apart from the TEE's own key generation at construction.
* `load_release` reads the stapled proof from a file (the bundle's `release` object: entry,
  index, checkpoint, inclusion proof); `refresh_release` fetches the current checkpoint and the
  inclusion proof of that entry from the log (`GET /checkpoint`, `GET /proof/inclusion`). The
  node contacts the log at start-up and on refresh only, never per request (L9).

Invariant: every bundle binds the key config of exactly one live epoch, `not_before`/`not_after`
of that epoch, and the node id.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from attestation.bundle import Release
from hushcc.errors import ConfigError, HushError
from ohttp.keyconfig import serialize_key_configs

if TYPE_CHECKING:
    from datetime import datetime

    from node.keys import Epoch

TEES = ("simulated", "configfs-tsm")


class Attester:
    """Makes the node's bundles for its key epochs.

    `simulated`: the simulated SEV-SNP platform and simulated GPUs, the self-measurement logged
    as a `sim` release. `configfs-tsm`: the real collectors (SEV-SNP or TDX report through the
    kernel's configfs-tsm, every GPU through NVML, which refuses unless CC mode is on); the
    release must then be given (its measurements are the image's, not a self-measurement).
    """

    def __init__(self, *, tee: str, node_id: bytes, measurement: bytes,  # noqa: PLR0913
                 release: Release | None, now: datetime, gpus: int = 1) -> None:
        """Set up the TEE collectors.

        Raises:
            ConfigError: a TEE this build cannot collect evidence from.
        """
        if tee not in TEES:
            raise ConfigError(f"unknown TEE {tee!r} (simulated or configfs-tsm)")
        if tee != "simulated" and release is None:
            raise ConfigError("a hardware TEE needs --release (the logged image release)")
        from attestation.gpu.simulated import SimulatedGpu  # noqa: PLC0415
        from attestation.simulated import SimulatedTee  # noqa: PLC0415
        from attestation.simulated_node import release_entry  # noqa: PLC0415

        self.tee = tee
        self.node_id = node_id
        self.measurement = measurement
        self.release = release or Release(release_entry(measurement), 0, "", ())
        self._tee = SimulatedTee.generate(now=now)
        self._gpus = [SimulatedGpu() for _ in range(gpus)]
        self._cache: dict[int, bytes] = {}

    def bundle(self, epoch: Epoch, nonce: bytes | None = None) -> bytes:
        """The bundle JSON for `epoch` (cached per epoch unless a nonce asks for a fresh one)."""
        if nonce is None and epoch.serial in self._cache:
            return self._cache[epoch.serial]
        if self.tee == "configfs-tsm":
            from attestation.node_bundle import collect_bundle  # noqa: PLC0415

            made = collect_bundle(
                node_id=self.node_id, key_config=serialize_key_configs([epoch.key.config]),
                not_before=epoch.not_before, not_after=epoch.not_after, release=self.release,
                nonce=nonce).to_json()
            if nonce is None:
                self._cache = {epoch.serial: made}
            return made
        from attestation.simulated_node import simulated_bundle  # noqa: PLC0415

        made = simulated_bundle(
            key_config=serialize_key_configs([epoch.key.config]), measurement=self.measurement,
            now=epoch.not_before, tee=self._tee, gpus=self._gpus, release=self.release,
            lifetime=epoch.not_after - epoch.not_before, nonce=nonce,
            node_id=self.node_id).to_json()
        if nonce is None:
            self._cache = {epoch.serial: made, **{k: v for k, v in self._cache.items()
                                                  if k > epoch.serial - 2}}
        return made

    def restaple(self, release: Release) -> None:
        """Use a refreshed log proof in every bundle made from now on."""
        self.release = release
        self._cache.clear()


def parse_release(data: bytes) -> Release:
    """Parse the `release` JSON object (entry, index, checkpoint, inclusion_proof).

    Raises:
        ConfigError: not such an object.
    """
    try:
        doc = json.loads(data)
        doc = doc.get("release", doc)
        proof = tuple(base64.b64decode(h, validate=True) for h in doc.get("inclusion_proof", []))
        index = doc["index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ConfigError("release index must be a non-negative integer")
        return Release(base64.b64decode(doc["entry"], validate=True), index,
                       str(doc.get("checkpoint", "")), proof)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ConfigError("release file is not a release object (entry, index, ...)") from exc


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - operator's log URL
            body: bytes = response.read(1 << 20)
            return body
    except (urllib.error.URLError, OSError) as exc:
        raise HushError(f"cannot fetch from the log at {url}") from exc


def refresh_release(log_url: str, release: Release) -> Release:
    """Fetch the log's current checkpoint and the inclusion proof of `release`'s entry.

    Raises:
        HushError: the log is unreachable or its answer is malformed.
    """
    base = log_url.rstrip("/")
    checkpoint = _get(base + "/checkpoint").decode("utf-8", "replace")
    lines = checkpoint.split("\n")
    try:
        size = int(lines[1])
        answer = json.loads(_get(f"{base}/proof/inclusion?index={release.index}&size={size}"))
        hashes = tuple(base64.b64decode(h, validate=True) for h in answer["hashes"])
    except (ValueError, IndexError, KeyError, TypeError, binascii.Error) as exc:
        raise HushError("the log's checkpoint or proof is malformed") from exc
    return Release(release.entry, release.index, checkpoint, hashes)
