"""The whole system on loopback, every service a real process started as a user starts it.

A log (`hushcc log serve`) holding this checkout's release (`attest measure` -> `log entry` ->
`log add`), an issuer (`hushcc issuer serve`), tiny-model nodes (`hushcc node serve`, simulated
TEE, the release stapled) and a relay (`hushcc relay serve`) that lists them; plus the files a
client is configured with (policy, pinned keys, API key). Each service is waited for by its
`listening on` line and stopped by its PID with SIGTERM (exit status 0 asserted).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.cli import main as hushcc
from attestation.measure import measure_node, source_root
from attestation.policy import load_policy
from client.attest import PolicyVerifier
from client.session import AsyncClient, TokenSettings
from node.model_files import write_tiny_model
from relay.issuer_keys import read_pinned_key
from tests.node.node_process import NodeProcess, start_node
from tests.relay.relay_helpers import start

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from app.services import ServiceProcess
    from client.transport import Transport

ISSUER_NAME = "issuer.hushcc.test"
ORIGIN_NAME = "relay.hushcc.test"
LOG_NAME = "log.hushcc.test"
API_KEY = "user-api-key-0123456789abcdef"
POLICY = """\
allow_simulated = true
log_key = "{log_key}"
"""


@dataclass
class System:
    """Where everything listens and the client-side files."""

    workdir: Path
    log: ServiceProcess
    issuer: ServiceProcess
    relay: ServiceProcess
    nodes: list[NodeProcess]
    log_key: str
    release: Path
    policy_path: Path
    issuer_pub: Path
    api_key_file: Path
    node_ids: list[str] = field(default_factory=list)

    def client(self, state_dir: Path | None = None, *, transport: Transport | None = None,
               log_url: str | None = None, **kwargs: object) -> AsyncClient:
        """An SDK client configured as a user would configure it."""
        policy = load_policy(self.policy_path)
        tokens = TokenSettings(read_pinned_key(self.issuer_pub), ISSUER_NAME, ORIGIN_NAME,
                               API_KEY, batch=4)
        verifier = PolicyVerifier.from_policy(policy, self.log_key)
        return AsyncClient(self.relay.url, self.issuer.url, self.log_key, policy, tokens=tokens,
                           verifier=verifier, log_url=log_url or self.log.url,
                           state_dir=state_dir, transport=transport,
                           **kwargs)  # type: ignore[arg-type]


def _cli(*args: str) -> None:
    assert hushcc(list(args)) == 0, args


def _node_id(node: NodeProcess) -> str:
    bundle = json.loads(node.get("/attestation"))
    node_id: str = bundle["node_id"]
    return node_id


def node_measurement(workdir: Path) -> bytes:
    """What the system's nodes measure at start: this checkout's code and the tiny model."""
    return measure_node(source_root(), workdir / "model")[0].digest


def log_release(workdir: Path, log_url: str, measurement: bytes, name: str = "release") -> Path:
    """Log a release entry for `measurement`; return the stapled release JSON file."""
    entry, release = workdir / f"{name}.entry.json", workdir / f"{name}.json"
    _cli("log", "entry", "--image-digest", "sha256:" + "ab" * 32,
         "--measurement", f"sim={measurement.hex()}", "--out", str(entry))
    _cli("log", "add", str(entry), "--url", log_url, "--release-key",
         str(workdir / "release.key"), "--log-key", str(workdir / "log.key.pub"),
         "--out", str(release))
    return release


@contextlib.contextmanager
def running_system(workdir: Path, *, nodes: int = 2) -> Iterator[System]:
    """Start log, issuer, `nodes` nodes and the relay; stop them all (exit 0) afterwards."""
    services: list[ServiceProcess] = []
    started: list[NodeProcess] = []
    try:
        _cli("log", "keygen", "--out", str(workdir / "log.key"), "--name", LOG_NAME)
        _cli("log", "keygen", "--out", str(workdir / "release.key"), "--name", "release.test")
        log = start(["log", "serve", "--host", "127.0.0.1", "--port", "0", "--state-dir",
                     str(workdir / "log"), "--log-key", str(workdir / "log.key"),
                     "--release-key", str(workdir / "release.key.pub")], workdir, "log")
        services.append(log)
        model = write_tiny_model(workdir / "model")
        release = log_release(workdir, log.url, node_measurement(workdir))
        _cli("issuer", "keygen", "--out", str(workdir / "issuer.key"))
        api_keys = workdir / "api.keys"
        api_keys.write_text(API_KEY + "\n")
        api_keys.chmod(0o600)
        issuer = start(["issuer", "serve", "--host", "127.0.0.1", "--port", "0", "--key",
                        str(workdir / "issuer.key"), "--api-keys", str(api_keys)],
                       workdir, "issuer")
        services.append(issuer)
        started.extend(start_node(workdir / f"node{i}", "--model", str(model),
                                  "--release", str(release)) for i in range(nodes))
        node_ids = [_node_id(node) for node in started]
        node_flags = [flag for node_id, node in zip(node_ids, started, strict=True)
                      for flag in ("--node", f"{node_id}={node.url}")]
        relay = start(["relay", "serve", "--host", "127.0.0.1", "--port", "0", "--issuer-key",
                       str(workdir / "issuer.key.pub"), "--issuer-name", ISSUER_NAME,
                       "--origin-name", ORIGIN_NAME, *node_flags], workdir, "relay")
        services.append(relay)
        log_key = (workdir / "log.key.pub").read_text().strip()
        policy = workdir / "policy.toml"
        policy.write_text(POLICY.format(log_key=log_key))
        api_key_file = workdir / "api.key"
        api_key_file.write_text(API_KEY + "\n")
        api_key_file.chmod(0o600)
        yield System(workdir, log, issuer, relay, started, log_key, release, policy,
                     workdir / "issuer.key.pub", api_key_file, node_ids)
    finally:
        for service in reversed(services):
            assert service.stop() == 0
        for node in started:
            assert node.stop() == 0

