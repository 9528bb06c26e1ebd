"""The node staples its release proof fetched from a real log at start-up; a client verifies the
whole bundle (evidence, binding v2 with node_id, log inclusion) before sending (L9, K1)."""

from __future__ import annotations

import base64
import json
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from attestation.bundle import Bundle
from attestation.gpu import GpuPolicy
from attestation.gpu.simulated import SimulatedGpu
from attestation.measure import measure_node, source_root
from attestation.policy import Policy
from attestation.report import AttestationError
from attestation.simulated import WITH_SIMULATED
from attestation.simulated_node import release_entry
from attestation.verify_bundle import StapledLogVerifier, verify_bundle
from tests.node.node_client import CHAT, inner, open_whole, seal
from tests.node.node_process import post_sync, start_node
from transparency_log.entry import ReleaseEntry, sign_entry
from transparency_log.keys import write_key_pair
from transparency_log.note import Signer

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def start_log(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str, Signer]:
    write_key_pair(tmp / "log.key", Signer.generate("test.hushcc/log"))
    release_signer = Signer.generate("test.hushcc/release")
    write_key_pair(tmp / "release.key", release_signer)
    log = subprocess.Popen(
        [sys.executable, "-m", "app", "log", "serve", "--host", "127.0.0.1", "--port", "0",
         "--state-dir", str(tmp / "state"), "--log-key", str(tmp / "log.key"),
         "--release-key", (tmp / "release.key.pub").read_text().strip()],
        stdout=subprocess.PIPE)
    assert log.stdout is not None
    ready, _, _ = select.select([log.stdout], [], [], 60)
    assert ready
    line = log.stdout.readline().decode().strip()
    assert line.startswith("listening on ")
    return log, line.removeprefix("listening on "), (tmp / "log.key.pub").read_text().strip(), \
        release_signer


def verify(bundle: bytes, log_key: str) -> object:
    now = datetime.now(UTC)
    return verify_bundle(
        bundle, policy=Policy(allow_simulated=True, log_key=log_key), now=now,
        log=StapledLogVerifier(log_key, now),
        gpu_policy=GpuPolicy(reference_measurements=SimulatedGpu().reference_measurements()),
        cpu_trust=WITH_SIMULATED)


def add_entry(log_url: str, measurement: bytes, signer: Signer) -> tuple[ReleaseEntry, int]:
    import urllib.request  # noqa: PLC0415

    entry = ReleaseEntry.from_bytes(release_entry(measurement))
    add = urllib.request.Request(log_url + "/add", data=sign_entry(entry, signer), method="POST")
    with urllib.request.urlopen(add, timeout=30) as response:
        return entry, int(json.loads(response.read())["index"])


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_bundle_from_log_stapled_release_verifies_and_refreshes(tmp_path: Path) -> None:
    log, log_url, log_key, release_signer = start_log(tmp_path)
    node = None
    try:
        config = tmp_path / "node.toml"
        config.write_text("release_refresh = 0.5\n")
        measurement = measure_node(source_root(), config=config)[0].digest  # code + config
        entry, index = add_entry(log_url, measurement, release_signer)
        release = tmp_path / "release.json"  # only entry + index: the node fetches the proof
        release.write_text(json.dumps({"entry": base64.b64encode(entry.to_bytes()).decode(),
                                       "index": index}))
        node = start_node(tmp_path / "node", "--tiny-model", "--release", str(release),
                          "--log-url", log_url, "--config", str(config))
        bundle = node.get("/attestation")
        verified = verify(bundle, log_key)
        assert verified.node_id.hex() == json.loads(bundle)["node_id"]  # type: ignore[attr-defined]
        with pytest.raises(AttestationError):  # twin: another pinned log key refuses it
            verify(bundle, Signer.generate("other.hushcc/log").verifier().to_string())
        add_entry(log_url, bytes(48), release_signer)  # the log grows: the node re-staples

        def tree_size() -> int:
            return int(Bundle.from_json(node.get("/attestation")).release.checkpoint
                       .split("\n")[1])
        wait_for(lambda: tree_size() == 2, "the node did not refresh its release proof")
        verify(node.get("/attestation"), log_key)  # the refreshed proof verifies too
    finally:
        log.terminate()
        log.wait(timeout=30)
    try:  # the log is gone: a refresh fails, the node keeps its proof and keeps serving (L9)
        wait_for(lambda: "release.refresh_failed" in [e["event"] for e in node.audit_lines()],
                 "the failed refresh was not reported")
        verify(node.get("/attestation"), log_key)
        body, ctx = seal(node.key_config(), inner(CHAT, {"messages": [
            {"role": "user", "content": "hi"}], "max_tokens": 2}), chunked=False)
        assert open_whole(ctx, b"".join(post_sync(node, body, "message/ohttp-req").chunks)
                          ).status == 200
    finally:
        assert node.stop() == 0
