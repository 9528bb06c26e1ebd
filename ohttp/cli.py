"""`hushcc ohttp ...`: generate a gateway key and inspect key configurations.

This is an I/O shell over the pure package: it reads and writes files, and draws entropy from
`os.urandom`. The private key file is created with mode 0600 and never overwritten; nothing
secret is ever printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.cliparse import add_group, bounded_int
from hushcc.errors import ConfigError, ProtocolError
from hushcc.files import create_exclusive, read_bytes

if TYPE_CHECKING:
    import argparse

    from hushcc.cliparse import OneLineErrorParser

AEAD_NAMES = {"aes128gcm": 0x0001, "aes256gcm": 0x0002, "chacha20poly1305": 0x0003}
KDF_NAMES = {"sha256": 0x0001, "sha384": 0x0002, "sha512": 0x0003}
KEM_NAMES = {"x25519": 0x0020}


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add `hushcc ohttp keygen` and `hushcc ohttp show-config`."""
    group = add_group(subparsers, "ohttp", "Oblivious HTTP gateway keys and key configurations")
    keygen = group.add_parser(
        "keygen",
        help="create a gateway private key FILE (0600) and FILE.pub (application/ohttp-keys)",
        description="Create an OHTTP gateway key. FILE holds the private key (mode 0600); "
        "FILE.pub holds the public key configuration as an application/ohttp-keys list.",
    )
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    keygen.add_argument("--key-id", type=bounded_int(0, 255), default=1, metavar="N",
                        help="key id, 0-255 (default 1)")
    keygen.add_argument("--kem", choices=sorted(KEM_NAMES), default="x25519")
    keygen.add_argument("--kdf", choices=sorted(KDF_NAMES), default="sha256")
    keygen.add_argument(
        "--aead",
        choices=sorted(AEAD_NAMES),
        action="append",
        help="offered AEAD; repeat for several (default: aes128gcm, aes256gcm, chacha20poly1305)",
    )
    keygen.set_defaults(handler=_keygen)
    show = group.add_parser(
        "show-config",
        help="print the key configurations in an application/ohttp-keys file",
        description="Parse an application/ohttp-keys file (or one bare key config) and print it.",
    )
    show.add_argument("file", metavar="FILE.pub")
    show.set_defaults(handler=_show_config)


def _keygen(args: argparse.Namespace) -> int:
    from ohttp.keyconfig import GatewayKey, serialize_key_configs  # noqa: PLC0415
    from ohttp.suites import (  # noqa: PLC0415
        SymmetricSuite,
        aead_id_from_int,
        kdf_id_from_int,
        kem_id_from_int,
    )

    out = Path(args.out)
    pub = out.with_name(out.name + ".pub")
    for path in (out, pub):
        if path.exists():
            raise ConfigError(f"refusing to overwrite existing file: {path}")
    kdf = kdf_id_from_int(KDF_NAMES[args.kdf])
    aeads = args.aead or ["aes128gcm", "aes256gcm", "chacha20poly1305"]
    suites = tuple(
        dict.fromkeys(SymmetricSuite(kdf, aead_id_from_int(AEAD_NAMES[a])) for a in aeads)
    )
    try:
        key = GatewayKey.generate(
            args.key_id, suites, rng=os.urandom, kem_id=kem_id_from_int(KEM_NAMES[args.kem])
        )
    except ProtocolError as exc:
        raise ConfigError(str(exc)) from None
    create_exclusive(out, key.to_key_file(), 0o600)
    create_exclusive(pub, serialize_key_configs([key.config]), 0o644)
    print(f"wrote {out} (private, 0600) and {pub} (application/ohttp-keys)")
    return 0


def _show_config(args: argparse.Namespace) -> int:
    from ohttp.keyconfig import (  # noqa: PLC0415
        KeyConfig,
        parse_key_configs,
        parse_public_key_config,
    )

    data = read_bytes(Path(args.file), "key config")
    try:
        configs = parse_key_configs(data)
    except ProtocolError:
        try:
            configs = (KeyConfig.from_bytes(data),)
        except ProtocolError as exc:
            reason = str(exc)
            try:
                parse_public_key_config(data)  # names a private key file given by mistake
            except ProtocolError as why:
                reason = str(why)
            raise ConfigError(f"{args.file}: not an OHTTP key configuration ({reason})") from None
    for config in configs:
        suites = ", ".join(f"{s.kdf_id.name}/{s.aead_id.name}" for s in config.suites)
        print(f"key_id={config.key_id} kem={config.kem_id.name} "
              f"public_key={config.public_key.hex()} suites=[{suites}]")
    return 0
