"""Helpers for the relay and issuer tests: real service processes, keys, tokens, OHTTP clients."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli import main as hushcc
from app.services import ServiceProcess, start_service
from ohttp.keyconfig import GatewayKey
from ohttp.suites import AeadId, KdfId, SymmetricSuite
from relay import authscheme, blindrsa
from relay.issuer_keys import read_pinned_key, read_private_key
from relay.privacypass import Token, TokenChallenge, begin_issuance, finalize_token, issue

if TYPE_CHECKING:
    from relay.issuer_keys import PinnedKey

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
NODE_ID = "ab" * 32
ISSUER_NAME = "issuer.test"
ORIGIN_NAME = "relay.test"


def start(args: list[str], workdir: Path, name: str, module: str = "app") -> ServiceProcess:
    """Start `python -m MODULE ARGS` from the repository, as `app.services` starts any service."""
    return start_service(name, args, workdir=workdir, cwd=REPO, module=module,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=START_TIMEOUT)


@dataclass
class IssuerFiles:
    key: Path
    pub: Path
    pinned: PinnedKey
    signer: blindrsa.BlindSigner


def make_issuer(workdir: Path, name: str = "issuer.key") -> IssuerFiles:
    key = workdir / name
    assert hushcc(["issuer", "keygen", "--out", str(key)]) == 0
    pub = key.with_name(name + ".pub")
    return IssuerFiles(key, pub, read_pinned_key(pub), blindrsa.BlindSigner(read_private_key(key)))


def mint(issuer: IssuerFiles, challenge: TokenChallenge | None = None) -> Token:
    """A token for the relay's challenge, signed in process (the issuer service has its tests)."""
    challenge = challenge or TokenChallenge(2, ISSUER_NAME, b"", ORIGIN_NAME)
    request, state = begin_issuance(issuer.pinned.key, challenge)
    return finalize_token(issuer.pinned.key, state, issue(issuer.signer, issuer.pinned.key,
                                                          request))


def authorization(token: Token) -> str:
    return authscheme.format_authorization(token)


def make_gateway_key(workdir: Path) -> tuple[GatewayKey, Path]:
    key = GatewayKey.generate(1, (SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),),
                              rng=os.urandom)
    path = workdir / "gateway.key"
    path.write_bytes(key.to_key_file())
    path.chmod(0o600)
    return key, path


def start_stub(workdir: Path, key_path: Path, mode: str = "normal",
               name: str = "stub") -> ServiceProcess:
    return start(["--key", str(key_path), "--record", str(workdir / f"{name}.jsonl"),
                  "--mode", mode], workdir, name, module="tests.relay.stub_gateway")


def start_relay(workdir: Path, issuer: IssuerFiles, gateway_url: str, *,
                extra: tuple[str, ...] = (), config: str | None = None,
                name: str = "relay", node_id: str = NODE_ID) -> ServiceProcess:
    args = ["relay", "serve", "--host", "127.0.0.1", "--port", "0", "--issuer-key",
            str(issuer.pub), "--issuer-name", ISSUER_NAME, "--origin-name", ORIGIN_NAME,
            "--node", f"{node_id}={gateway_url}", *extra]
    if config is not None:
        path = workdir / f"{name}.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    return start(args, workdir, name)


def records(workdir: Path, name: str = "stub") -> list[dict[str, Any]]:
    path = workdir / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
