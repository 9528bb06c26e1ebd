"""`hushcc relay serve` and `hushcc issuer keygen|serve`: the two services of this package.

They are separate trust domains (DESIGN.md): the issuer authenticates users and signs blinded
tokens, the relay redeems tokens and forwards ciphertext; neither needs the other's secrets, only
the issuer's public key record (`FILE.pub`), which the relay pins.

* `hushcc issuer keygen --out FILE [--lifetime-days N]`: FILE (private, 0600) and FILE.pub.
* `hushcc issuer serve --key FILE --api-keys FILE [--quota N] [--quota-window S]
  [--host H] [--port N]`.
* `hushcc relay serve --issuer-key FILE.pub --issuer-name NAME [--origin-name NAME]
  [--node ID=URL ...] [--redis URL] [--config FILE.toml] [--host H] [--port N]`; the TOML may
  hold `issuer_key`, `issuer_name`, `origin_name`, `redis`, `refresh_interval`, `[[nodes]]`
  (`id`, `url`) and `[limits]` (the fields of `RelayLimits`); flags override it.
Both print `listening on http://HOST:PORT` when ready; SIGTERM / Ctrl-C drain and exit 0.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hushcc.cliparse import add_group, bounded_float, bounded_int, port_number, redis_url
from hushcc.errors import ConfigError
from hushcc.files import read_text

if TYPE_CHECKING:
    import argparse

    from hushcc.cliparse import OneLineErrorParser
    from relay.directory import NodeEntry

DAY = 86400


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add the `issuer` and `relay` command groups."""
    issuer = add_group(subparsers, "issuer", "the Privacy Pass token issuer (RFC 9578, type 2)")
    p = issuer.add_parser("keygen", help="generate an issuer key FILE (0600) and FILE.pub")
    p.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    p.add_argument("--lifetime-days", type=bounded_float(1 / 24, 3650), default=30.0,
                   help="key epoch length; relays refuse its tokens afterwards (default 30)")
    p.set_defaults(handler=_issuer_keygen)

    p = issuer.add_parser("serve", help="serve the issuer directory and POST /token-request")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8082, help="0 picks a free port")
    p.add_argument("--key", required=True, metavar="FILE", help="issuer private key (FILE.pub "
                   "beside it)")
    p.add_argument("--api-keys", required=True, metavar="FILE",
                   help="file of accepted API keys, one per line (mode 0600)")
    p.add_argument("--quota", type=bounded_int(1, 10**9), default=1000,
                   help="tokens per API key per window")
    p.add_argument("--quota-window", type=bounded_float(1, 10 * 365 * DAY), default=3600.0,
                   help="seconds")
    p.set_defaults(handler=_issuer_serve)

    relay = add_group(subparsers, "relay",
                      "the Oblivious HTTP relay (token-gated, ciphertext only)")
    p = relay.add_parser("serve", help="serve /v1/nodes and forward OHTTP to allowlisted nodes")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080, help="0 picks a free port")
    p.add_argument("--config", metavar="FILE.toml", help="relay configuration")
    p.add_argument("--issuer-key", metavar="FILE.pub", help="pinned issuer key record")
    p.add_argument("--issuer-name", help="issuer name in the relay's token challenge")
    p.add_argument("--origin-name", help="the relay's name in the challenge (origin_info)")
    p.add_argument("--node", action="append", default=[], metavar="ID=URL",
                   help="an allowlisted node: its id and gateway base URL (repeatable)")
    p.add_argument("--redis", type=redis_url, metavar="URL",
                   help="shared spent-token store (default: memory)")
    p.add_argument("--refresh-interval", type=bounded_float(0.05, DAY),
                   help="seconds between directory refreshes (default 60)")
    p.set_defaults(handler=_relay_serve)


def _issuer_keygen(args: argparse.Namespace) -> int:
    from relay.issuer_keys import generate  # noqa: PLC0415

    pub, pinned = generate(Path(args.out), now=int(time.time()),
                           lifetime=int(args.lifetime_days * DAY))
    print(f"wrote {args.out} and {pub}")
    print(f"token key id {pinned.key.token_key_id.hex()} valid until {pinned.not_after}")
    return 0


def _issuer_serve(args: argparse.Namespace) -> int:
    from relay.blindrsa import BlindSigner  # noqa: PLC0415
    from relay.issuer import IssuerConfig, IssuerServer, read_api_keys  # noqa: PLC0415
    from relay.issuer_keys import read_pinned_key, read_private_key  # noqa: PLC0415
    from relay.service import run_service  # noqa: PLC0415

    key_path = Path(args.key)
    signer = BlindSigner(read_private_key(key_path))
    pinned = read_pinned_key(key_path.with_name(key_path.name + ".pub"))
    config = IssuerConfig(pinned, read_api_keys(Path(args.api_keys)), quota=args.quota,
                          window=args.quota_window)
    return run_service(IssuerServer(signer, config).app(), args.host, args.port)


RELAY_CONFIG_KEYS = frozenset({"issuer_key", "issuer_name", "origin_name", "redis",
                               "refresh_interval", "nodes", "limits"})


def _load_toml(path: str | None) -> dict[str, Any]:
    """The relay's TOML config (`{}` without one); every unknown top-level key is refused."""
    if path is None:
        return {}
    try:
        config = tomllib.loads(read_text(Path(path), "relay config", allow_empty=True))
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"relay config is not valid TOML: {path}") from None
    unknown = set(config) - RELAY_CONFIG_KEYS
    if unknown:
        raise ConfigError(f"unknown relay config keys: {', '.join(sorted(unknown))[:200]}")
    return config


def _nodes(flags: list[str], config: dict[str, Any]) -> list[NodeEntry]:
    from relay.directory import NodeEntry  # noqa: PLC0415

    nodes = []
    for item in config.get("nodes", []):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(
                item.get("url"), str):
            raise ConfigError("each [[nodes]] needs string id and url")
        nodes.append(NodeEntry(item["id"], item["url"].rstrip("/")))
    for flag in flags:
        node_id, sep, url = flag.partition("=")
        if not sep:
            raise ConfigError("--node takes ID=URL")
        nodes.append(NodeEntry(node_id, url.rstrip("/")))
    if not nodes:
        raise ConfigError("the relay needs at least one node (--node or [[nodes]])")
    return nodes


def _limits(config: dict[str, Any]) -> Any:  # noqa: ANN401 - RelayLimits, imported lazily
    from relay.server import RelayLimits  # noqa: PLC0415

    table = config.get("limits", {})
    names = {f.name: f.type for f in dataclasses.fields(RelayLimits)}
    unknown = set(table) - set(names)
    if unknown:
        raise ConfigError(f"unknown [limits] keys: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        want = int if names[name] == "int" else float
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"[limits] {name} must be a positive number")
        values[name] = want(value)
    return RelayLimits(**values)


def _relay_serve(args: argparse.Namespace) -> int:
    from relay.directory import NodeDirectory  # noqa: PLC0415
    from relay.guard import GuardedSite  # noqa: PLC0415
    from relay.issuer_keys import read_pinned_key  # noqa: PLC0415
    from relay.redemption import Redeemer, relay_challenge  # noqa: PLC0415
    from relay.server import RelayServer  # noqa: PLC0415
    from relay.service import run_service  # noqa: PLC0415
    from relay.spent import MemorySpentStore, RedisSpentStore, SpentStore  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = _load_toml(args.config)
    issuer_key = args.issuer_key or config.get("issuer_key")
    issuer_name = args.issuer_name or config.get("issuer_name")
    if not issuer_key or not issuer_name:
        raise ConfigError("the relay needs --issuer-key and --issuer-name (or the TOML keys)")
    pinned = read_pinned_key(Path(str(issuer_key)))
    origin = args.origin_name or config.get("origin_name") or f"{args.host}:{args.port}"
    url = args.redis or (redis_url(str(config["redis"])) if "redis" in config else None)
    store: SpentStore = RedisSpentStore(url) if url else MemorySpentStore()
    refresh = args.refresh_interval or float(config.get("refresh_interval", 60.0))
    directory = NodeDirectory(_nodes(args.node, config), refresh_interval=refresh,
                              max_stale=10 * refresh)
    redeemer = Redeemer(pinned, relay_challenge(str(issuer_name), str(origin)), store)
    server = RelayServer(directory, redeemer, _limits(config))
    return run_service(server.app(), args.host, args.port,
                       site_factory=lambda runner, host, port: GuardedSite(
                           runner, host, port, server.guard))
