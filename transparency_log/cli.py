"""`hushcc log ...`: keygen, serve, add and verify for the release transparency log.

* `hushcc log keygen --out FILE [--name NAME]` writes `FILE` (private, 0600) and `FILE.pub`.
* `hushcc log serve --host H --port N --state-dir DIR [--config FILE.toml] [--log-key FILE]
  [--release-key KEY]`; the TOML may set `log_key`, `release_key`, `max_batch`,
  `resign_interval`; flags override it. Prints `listening on http://HOST:PORT` when ready;
  SIGTERM / Ctrl-C drain and exit 0.
* `hushcc log add ENTRY --url URL [--release-key FILE] [--log-key KEY]`: ENTRY is a JSON file
  holding either a plain `hushcc.release/v1` entry (signed here with `--release-key`) or an
  already signed entry; with `--log-key` the returned inclusion proof is verified.
* `hushcc log verify --url URL --log-key KEY --state FILE [--max-age S]`: fetch the checkpoint,
  check its signature, check consistency with the checkpoint persisted in FILE, and report.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hushcc.cliparse import add_group
from hushcc.errors import ConfigError, HushError, ProtocolError

if TYPE_CHECKING:
    import argparse

    from hushcc.cliparse import OneLineErrorParser


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add the `log` command group."""
    group = add_group(subparsers, "log", "the release transparency log (C2SP tlog-tiles)")
    p = group.add_parser("keygen", help="generate an Ed25519 note key (log or release key)")
    p.add_argument("--out", required=True, help="private key file (FILE.pub gets the verifier)")
    p.add_argument("--name", default="log.hushcc.local",
                   help="key name; for the log key this is the checkpoint origin")
    p.set_defaults(handler=_keygen)

    p = group.add_parser("serve", help="serve the log (tlog-tiles read API, POST /add)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    p.add_argument("--state-dir", required=True, help="directory holding the log's files")
    p.add_argument("--config", help="TOML with log_key, release_key, max_batch, resign_interval")
    p.add_argument("--log-key", help="the log's private key file")
    p.add_argument("--release-key", help="release verifier key (string or .pub file)")
    p.set_defaults(handler=_serve)

    p = group.add_parser("add", help="submit a release entry")
    p.add_argument("entry", metavar="ENTRY", help="JSON file: a release entry or a signed entry")
    p.add_argument("--url", required=True, help="log base URL")
    p.add_argument("--release-key", help="private release key file to sign a plain entry")
    p.add_argument("--log-key", help="log verifier key to check the returned proof")
    p.set_defaults(handler=_add)

    p = group.add_parser("verify", help="verify the log's checkpoint and its consistency")
    p.add_argument("--url", required=True, help="log base URL")
    p.add_argument("--log-key", required=True, help="pinned log verifier key (string or file)")
    p.add_argument("--origin", help="pinned origin (default: the key name)")
    p.add_argument("--state", required=True, help="file persisting the last-seen checkpoint")
    p.add_argument("--max-age", type=int, help="maximum checkpoint age in seconds")
    p.set_defaults(handler=_verify)


def _keygen(args: argparse.Namespace) -> int:
    from transparency_log.keys import write_key_pair  # noqa: PLC0415
    from transparency_log.note import Signer  # noqa: PLC0415

    try:
        signer = Signer.generate(args.name)
    except ProtocolError as exc:
        raise ConfigError("invalid key name") from exc
    pub = write_key_pair(args.out, signer)
    print(f"wrote {args.out} and {pub}")
    print(signer.verifier().to_string())
    return 0


def _load_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with Path(path).open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}") from exc


def _serve(args: argparse.Namespace) -> int:
    from transparency_log.keys import read_signer, read_verifier  # noqa: PLC0415
    from transparency_log.server import LogServer, ServerConfig, serve  # noqa: PLC0415
    from transparency_log.storage import LogStorage  # noqa: PLC0415

    config = _load_config(args.config)
    log_key = args.log_key or config.get("log_key")
    release_key = args.release_key or config.get("release_key")
    if not log_key or not release_key:
        raise ConfigError("serve needs a log key and a release key (flags or --config)")
    signer = read_signer(log_key)
    release = read_verifier(str(release_key))
    storage = LogStorage(args.state_dir, signer)
    server = LogServer(storage, release, ServerConfig(
        max_batch=int(config.get("max_batch", 4096)),
        resign_interval=float(config.get("resign_interval", 300.0))))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(server, args.host, args.port, stop)

    try:
        asyncio.run(main())
    finally:
        storage.close()
    return 0


def _http(url: str, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise HushError(f"log answered HTTP {exc.code}: {detail}") from exc
    except urllib.error.URLError as exc:
        raise HushError(f"cannot reach the log at {url}") from exc


def _add(args: argparse.Namespace) -> int:
    from transparency_log.client import verify_stapled_inclusion  # noqa: PLC0415
    from transparency_log.entry import ReleaseEntry, sign_entry  # noqa: PLC0415
    from transparency_log.keys import read_signer, read_verifier  # noqa: PLC0415

    raw = Path(args.entry).read_bytes()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError("ENTRY is not JSON") from exc
    if isinstance(value, dict) and set(value) == {"entry", "key", "signature"}:
        body = raw
    else:
        if not args.release_key:
            raise ConfigError("a plain entry needs --release-key to sign it")
        body = sign_entry(ReleaseEntry.from_value(value), read_signer(args.release_key))
    answer = json.loads(_http(args.url.rstrip("/") + "/add", body))
    index, note = answer["index"], answer["checkpoint"]
    if args.log_key:
        entry = ReleaseEntry.from_bytes(base64.b64decode(json.loads(body)["entry"]))
        proof = [base64.b64decode(h) for h in answer["inclusion_proof"]]
        verify_stapled_inclusion(entry.canonical, index, note, proof,
                                 log_verifier_key=read_verifier(args.log_key))
        print(f"added at index {index}; inclusion proof verified")
    else:
        print(f"added at index {index}")
    print(note, end="")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from transparency_log.client import (  # noqa: PLC0415
        FileCheckpointStore,
        ForkDetectedError,
        LogClient,
        LogTrust,
    )
    from transparency_log.keys import read_verifier  # noqa: PLC0415

    verifier = read_verifier(args.log_key)
    client = LogClient(LogTrust(verifier, args.origin or verifier.name, max_age=args.max_age),
                       FileCheckpointStore(args.state))
    base = args.url.rstrip("/")
    note = _http(base + "/checkpoint")
    old = client.last_seen()
    proof: list[bytes] = []
    from transparency_log.checkpoint import Checkpoint  # noqa: PLC0415
    from transparency_log.note import Note  # noqa: PLC0415

    new_size = Checkpoint.from_bytes(Note.from_bytes(note).text).size
    if old is not None and 0 < old.size < new_size:
        answer = json.loads(_http(f"{base}/proof/consistency?from={old.size}&to={new_size}"))
        proof = [base64.b64decode(h) for h in answer["hashes"]]
    try:
        new = client.update(note, proof, now=int(time.time()))
    except ForkDetectedError as exc:
        print("FORK DETECTED: the log showed two inconsistent views")
        print("--- last seen checkpoint ---")
        print(exc.old_note.decode(errors="replace"), end="")
        print("--- checkpoint now served ---")
        print(exc.new_note.decode(errors="replace"), end="")
        return 1
    print(f"log {new.origin}: checkpoint signature OK, tree size {new.size}, "
          f"root {new.root.hex()}")
    if old is None:
        print("no previous checkpoint: trusted on first use and persisted")
    else:
        print(f"consistent with the last seen tree of size {old.size}")
    return 0
