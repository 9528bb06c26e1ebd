"""`hushcc log ...`: keygen, serve, add and verify for the release transparency log.

* `hushcc log keygen --out FILE [--name NAME]` writes `FILE` (private, 0600) and `FILE.pub`.
* `hushcc log serve --host H --port N --state-dir DIR [--config FILE.toml] [--log-key FILE]
  [--release-key KEY]`; the TOML may set `log_key`, `release_key`, `max_batch`,
  `resign_interval`, `receipt_timeout`, `max_connections` (any other key is an error); flags
  override it. Prints `listening on http://HOST:PORT` when ready; SIGTERM / SIGINT drain and
  exit 0.
* `hushcc log entry --image-digest D --measurement NAME=HEX ... [--out FILE]` writes a canonical
  `hushcc.release/v1` entry.
* `hushcc log add ENTRY --url URL [--release-key FILE] [--log-key KEY] [--out FILE]`: ENTRY is a
  JSON file holding a plain `hushcc.release/v1` entry (signed here with `--release-key`) or an
  already signed entry. Everything checkable is checked before anything is appended (the entry,
  the keys, and with `--log-key` the log's current checkpoint); an entry already in the log
  keeps its index. Prints the stapled release JSON `{entry, index, checkpoint,
  inclusion_proof}` (what `hushcc attest simulate --release` takes) on stdout or into `--out`;
  with `--log-key` the inclusion proof is verified first.
* `hushcc log verify --url URL --log-key KEY --state FILE [--max-age S]`: fetch the checkpoint,
  check its signature, check consistency with the checkpoint persisted in FILE, and report.

Every bad input is a one-line `hushcc: error: ...` (exit 1); digests are shown in hex.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.cliparse import add_group, http_url, port_number
from hushcc.errors import ConfigError, HushError, ProtocolError, VerificationError
from hushcc.files import read_text

if TYPE_CHECKING:
    import argparse

    from hushcc.cliparse import OneLineErrorParser
    from transparency_log.checkpoint import Checkpoint
    from transparency_log.config import LogConfig
    from transparency_log.note import Verifier

MAX_AGE_LIMIT = 10 * 365 * 86400


def _max_age(text: str) -> int:
    """An argparse type: a non-negative number of seconds."""
    if not text.isascii() or not text.isdigit() or int(text) > MAX_AGE_LIMIT:
        raise ConfigError(f"--max-age must be whole seconds from 0 to {MAX_AGE_LIMIT}")
    return int(text)


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
    p.add_argument("--port", type=port_number, default=8081, help="0 picks a free port")
    p.add_argument("--state-dir", required=True, help="directory holding the log's files")
    p.add_argument("--config", help="TOML: log_key, release_key, max_batch, resign_interval, "
                                    "receipt_timeout, max_connections")
    p.add_argument("--log-key", help="the log's private key file")
    p.add_argument("--release-key", help="release verifier key (string or .pub file)")
    p.set_defaults(handler=_serve)

    p = group.add_parser("entry", help="write a hushcc.release/v1 entry (the input of add)")
    p.add_argument("--image-digest", required=True, help="the release image digest")
    p.add_argument("--measurement", action="append", required=True, metavar="NAME=HEX",
                   help="a measurement (e.g. sim=HEX from `hushcc attest measure`); repeatable")
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--source", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="write the entry here instead of stdout")
    p.set_defaults(handler=_entry)

    p = group.add_parser("add", help="submit a release entry; print the stapled release JSON")
    p.add_argument("entry", metavar="ENTRY", help="JSON file: a release entry or a signed entry")
    p.add_argument("--url", required=True, type=http_url, help="log base URL")
    p.add_argument("--release-key", help="private release key file to sign a plain entry")
    p.add_argument("--log-key", help="log verifier key: check the log and the returned proof")
    p.add_argument("--out", type=Path, help="write the stapled release JSON here, not stdout")
    p.set_defaults(handler=_add)

    p = group.add_parser("verify", help="verify the log's checkpoint and its consistency")
    p.add_argument("--url", required=True, type=http_url, help="log base URL")
    p.add_argument("--log-key", required=True, help="pinned log verifier key (string or file)")
    p.add_argument("--origin", help="pinned origin (default: the key name)")
    p.add_argument("--state", required=True, type=Path,
                   help="file persisting the last-seen checkpoint")
    p.add_argument("--max-age", type=_max_age, help="maximum checkpoint age in seconds")
    p.set_defaults(handler=_verify)


def _keygen(args: argparse.Namespace) -> int:
    from transparency_log.keys import write_key_pair  # noqa: PLC0415
    from transparency_log.note import Signer, check_new_key_name  # noqa: PLC0415

    try:
        check_new_key_name(args.name)
    except ProtocolError as exc:
        raise ConfigError(f"--name: {exc}") from None
    signer = Signer.generate(args.name)
    pub = write_key_pair(args.out, signer)
    print(f"wrote {args.out} and {pub}")
    print(signer.verifier().to_string())
    return 0


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key in out:
            raise ConfigError(f"{option} takes distinct KEY=VALUE pairs")
        out[key] = value
    return out


def _entry(args: argparse.Namespace) -> int:
    from transparency_log.entry import SCHEMA, ReleaseEntry  # noqa: PLC0415

    value = {"schema": SCHEMA, "image": {"digest": args.image_digest},
             "measurements": {k: v.lower() for k, v in
                              _pairs("--measurement", args.measurement).items()},
             "model": _pairs("--model", args.model), "source": _pairs("--source", args.source)}
    try:
        canonical = ReleaseEntry.from_value(value).canonical
    except ProtocolError as exc:
        raise ConfigError(f"release entry: {exc}") from None
    if args.out is not None:
        args.out.write_bytes(canonical + b"\n")
        print(f"wrote {args.out}")
    else:
        print(canonical.decode())
    return 0


def _load_config(path: str | None) -> LogConfig:
    from transparency_log.config import LogConfig, parse_log_config  # noqa: PLC0415

    if path is None:
        return LogConfig()
    try:
        table = tomllib.loads(read_text(Path(path), "log config"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"log config {path} is not valid TOML") from exc
    try:
        return parse_log_config(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    from transparency_log.keys import read_signer, read_verifier  # noqa: PLC0415
    from transparency_log.server import LogServer, serve  # noqa: PLC0415
    from transparency_log.storage import LogStorage  # noqa: PLC0415

    config = _load_config(args.config)
    log_key = args.log_key or config.log_key
    release_key = args.release_key or config.release_key
    if not log_key or not release_key:
        raise ConfigError("serve needs a log key and a release key (flags or --config)")
    signer = read_signer(log_key, "log key")
    release = read_verifier(release_key, "release key")
    storage = LogStorage(args.state_dir, signer)
    server = LogServer(storage, release, config.server)

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


def _one_line(text: str, limit: int = 200) -> str:
    """A peer's text made safe for a one-line message: printable, bounded."""
    return "".join(c if c.isprintable() else " " for c in text[:limit])


def _http(url: str, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310 - http(s) only (http_url)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - same
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        raw = exc.read(4096)
        try:
            detail = str(json.loads(raw)["error"])
        except (ValueError, KeyError, TypeError, RecursionError):
            detail = raw.decode(errors="replace")
        raise HushError(f"log answered HTTP {exc.code}: {_one_line(detail)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HushError(f"cannot reach the log at {url}") from exc


def _checkpoint(note: bytes, verifier: Verifier, url: str) -> Checkpoint:
    """Verify a checkpoint the log served under the pinned key (the origin is the key name)."""
    from transparency_log.client import LogTrust, verify_checkpoint  # noqa: PLC0415

    try:
        return verify_checkpoint(note, LogTrust(verifier, verifier.name))
    except ProtocolError as exc:
        raise VerificationError(f"the log at {url} served a malformed checkpoint") from exc


def _signed_body(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """Return (signed-entry JSON to POST, canonical entry bytes), checked before any append."""
    from transparency_log.entry import ReleaseEntry, sign_entry  # noqa: PLC0415
    from transparency_log.keys import read_signer  # noqa: PLC0415
    from transparency_log.note import b64decode_strict  # noqa: PLC0415

    text = read_text(Path(args.entry), "release entry")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigError(f"release entry {args.entry} is not JSON") from None
    try:
        if isinstance(value, dict) and set(value) == {"entry", "key", "signature"}:
            raw = value["entry"] if isinstance(value["entry"], str) else ""
            entry = ReleaseEntry.from_bytes(b64decode_strict(raw))
            return text.encode(), entry.canonical
        entry = ReleaseEntry.from_value(value)
    except ProtocolError as exc:
        raise ConfigError(f"release entry {args.entry}: {exc}") from None
    if not args.release_key:
        raise ConfigError("a plain entry needs --release-key to sign it")
    return sign_entry(entry, read_signer(args.release_key, "release key")), entry.canonical


def _add(args: argparse.Namespace) -> int:
    from transparency_log.client import verify_stapled_inclusion  # noqa: PLC0415
    from transparency_log.keys import read_verifier  # noqa: PLC0415

    body, canonical = _signed_body(args)
    verifier = read_verifier(args.log_key, "log key") if args.log_key else None
    if verifier is not None:  # a wrong log key (or a log that is not ours) fails before any add
        _checkpoint(_http(args.url + "/checkpoint"), verifier, args.url)
    try:
        answer = json.loads(_http(args.url + "/add", body))
        index, note = int(answer["index"]), str(answer["checkpoint"])
        proof_text = [str(h) for h in answer["inclusion_proof"]]
        proof = [base64.b64decode(h, validate=True) for h in proof_text]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise HushError(f"the log at {args.url} gave a malformed answer to /add") from None
    if verifier is not None:
        checkpoint = verify_stapled_inclusion(canonical, index, note, proof,
                                              log_verifier_key=verifier)
        status = (f"logged at index {index}: inclusion proof verified against tree size "
                  f"{checkpoint.size}, root {checkpoint.root.hex()}")
    else:
        status = f"logged at index {index} (not verified: pass --log-key to check the proof)"
    stapled = json.dumps({"entry": base64.b64encode(canonical).decode(), "index": index,
                          "checkpoint": note, "inclusion_proof": proof_text}, indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(stapled, encoding="utf-8")
        print(f"{status}; wrote {args.out}")
    else:
        sys.stdout.write(stapled)
        print(status, file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from transparency_log.client import (  # noqa: PLC0415
        FileCheckpointStore,
        ForkDetectedError,
        LogClient,
        LogTrust,
    )
    from transparency_log.keys import read_verifier  # noqa: PLC0415

    verifier = read_verifier(args.log_key, "log key")
    client = LogClient(LogTrust(verifier, args.origin or verifier.name, max_age=args.max_age),
                       FileCheckpointStore(args.state))
    try:
        old = client.last_seen()
    except HushError as exc:
        raise ConfigError(f"state file {args.state}: {exc}") from None
    note = _http(args.url + "/checkpoint")
    new_size = _served_size(note, args.url)
    proof: list[bytes] = []
    if old is not None and 0 < old.size < new_size:
        raw = _http(f"{args.url}/proof/consistency?from={old.size}&to={new_size}")
        try:
            proof = [base64.b64decode(h, validate=True) for h in json.loads(raw)["hashes"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise HushError(f"the log at {args.url} gave a malformed consistency proof") from None
    try:
        new = client.update(note, proof, now=int(time.time()))
    except ForkDetectedError as exc:
        print("FORK DETECTED: the log showed two inconsistent views")
        print("--- last seen checkpoint ---")
        print(exc.old_note.decode(errors="replace"), end="")
        print("--- checkpoint now served ---")
        print(exc.new_note.decode(errors="replace"), end="")
        return 1
    except ProtocolError as exc:
        raise VerificationError(f"the log at {args.url} served a malformed checkpoint") from exc
    print(f"log {new.origin}: checkpoint signature OK, tree size {new.size}, "
          f"root {new.root.hex()}")
    if old is None:
        print("no previous checkpoint: trusted on first use and persisted")
    else:
        print(f"consistent with the last seen tree of size {old.size}")
    return 0


def _served_size(note: bytes, url: str) -> int:
    """The tree size a served note claims (checked for real by `LogClient.update`)."""
    from transparency_log.checkpoint import Checkpoint  # noqa: PLC0415
    from transparency_log.note import Note  # noqa: PLC0415

    try:
        return Checkpoint.from_bytes(Note.from_bytes(note).text).size
    except ProtocolError as exc:
        raise VerificationError(f"the log at {url} served a malformed checkpoint") from exc
