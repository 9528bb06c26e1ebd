"""Assembling the node process: model, engine, keys, attestation, gateway, shell; then serve.

Not pure: this is where the node meets its configuration, the OS randomness and the clock. One
engine per process, built here once with the model loaded once; every tenant's requests share
its batches. Order at start-up: the inputs checked (model path, release file), then hardening,
then the model, keys and bundle, then the ready line. The node writes nothing to disk (N1): keys
are born in memory, the release proof is read or fetched, logs are allowlisted events on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError
from hushcc.files import read_bytes
from node.audit import AuditLog
from node.gateway import GatewayConfig
from node.server import NodeLimits

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file

if TYPE_CHECKING:
    from pathlib import Path

    from attestation.bundle import Release
    from node.engine.engine import Engine
    from node.hygiene import Mode
    from node.keys import NodeIdentity
    from node.model_files import LoadedModel
    from node.server import NodeServer


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Everything `hushcc node serve` can be told (flags or the TOML config)."""

    host: str = "127.0.0.1"
    port: int = 8443
    metrics_port: int | None = None
    model: Path | None = None
    tiny_model: bool = False
    tee: str = "simulated"
    release: Path | None = None
    log_url: str | None = None
    config: Path | None = None  # the TOML file the settings came from (measured with the code)
    redis_url: str | None = None
    key_interval: float = 3600.0
    key_grace: float = 300.0
    release_refresh: float = 3600.0
    num_blocks: int = 512
    block_size: int = 16
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N" (checked by `check_inputs`)
    dtype: str | None = None  # "float32", "bfloat16", "float16"; None: the device's default
    max_num_seqs: int = 64
    limits: NodeLimits = field(default_factory=NodeLimits)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)


def check_inputs(options: NodeOptions) -> Release | None:
    """Check every input before any work: the device, the model path, the release file.

    Runs before the hardening audit lines, so a bad input is one error line and nothing else.

    Raises:
        ConfigError: a device that is not here, a missing model, `--log-url` or a hardware TEE
            without `--release`, a bad release file.
    """
    from node.attest import parse_release  # noqa: PLC0415
    from node.engine.runner import DTYPES, resolve_device  # noqa: PLC0415

    resolve_device(options.device)
    if options.dtype is not None and options.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}")

    model = options.model
    if not options.tiny_model and model is not None and not (
            model.is_dir() or (model.is_file() and model.suffix == ".gguf")):
        raise ConfigError(f"model not found (a directory or a .gguf file): {model}")
    if not options.tiny_model and model is not None and model.is_file():
        with model.open("rb") as handle:  # GGUF files start with the magic "GGUF"
            if handle.read(4) != GGUF_MAGIC:
                raise ConfigError(f"model is not a GGUF file: {model}")
    if options.release is None:
        if options.log_url is not None:
            raise ConfigError("--log-url needs --release (the entry and its index)")
        if options.tee != "simulated":
            raise ConfigError("a hardware TEE needs --release (the logged image release)")
        return None
    return parse_release(read_bytes(options.release, "release file"))


def served_model_path(options: NodeOptions) -> Path | None:
    """The model file or directory the node serves (None: the in-memory tiny model)."""
    from node.engine.model import SMOLLM2_GGUF, smollm2_dir  # noqa: PLC0415

    if options.tiny_model:
        return None
    if options.model is not None:
        return options.model
    folder = smollm2_dir()
    return folder / SMOLLM2_GGUF if folder is not None else None


def _refreshed(options: NodeOptions, release: Release | None, audit: AuditLog) -> Release | None:
    from node.attest import refresh_release  # noqa: PLC0415

    if release is None or options.log_url is None:
        return release
    release = refresh_release(options.log_url, release)
    size = int(release.checkpoint.split("\n")[1])
    audit.event("release.refreshed", index=release.index, tree_size=size)
    return release


def build_engine(model: LoadedModel, options: NodeOptions) -> Engine:
    """The node's one engine over `model` (the bench builds the same one in process).

    On CUDA the node attends with `padded`, never the compiled `flex`: torch.compile writes its
    caches to disk (N1) and Triton compiles new shapes lazily by running `ptxas` in a
    subprocess, which the seccomp filter (no execve once the node listens) would refuse.
    """
    from node.engine.engine import Engine, EngineConfig  # noqa: PLC0415
    from node.engine.runner import DTYPES, PagedRunner  # noqa: PLC0415
    from node.engine.sequence import EngineLimits  # noqa: PLC0415

    # on CUDA, decode graphs are captured here for batches up to max_num_seqs (graphs.py)
    runner = PagedRunner(model.weights, num_blocks=options.num_blocks,
                         block_size=options.block_size, device=options.device,
                         dtype=None if options.dtype is None else DTYPES[options.dtype],
                         attention="padded" if options.device != "cpu" else None,
                         max_graph_batch=options.max_num_seqs)
    return Engine(runner, model.tokenizer, EngineConfig(
        limits=EngineLimits(max_model_len=runner.max_model_len,
                            max_tokens_cap=options.gateway.api.max_tokens,
                            max_num_seqs=options.max_num_seqs),
        eos_token_ids=model.eos_token_ids, vocab_size=model.weights.config.vocab_size))


def build(options: NodeOptions, audit: AuditLog,
          release: Release | None) -> tuple[NodeServer, NodeIdentity]:
    """Build the server (model loaded, engine built, keys and first bundle made).

    `release` is what `check_inputs` read; it is refreshed from `--log-url` here.
    """
    from attestation.measure import measure_node, source_root  # noqa: PLC0415
    from node.attest import Attester  # noqa: PLC0415
    from node.gateway import Gateway, ServedModel  # noqa: PLC0415
    from node.keys import KeyRing, NodeIdentity, RotationPolicy  # noqa: PLC0415
    from node.model_files import load_model, tiny_model  # noqa: PLC0415
    from node.replay_redis import RedisReplayStore  # noqa: PLC0415
    from node.server import NodeServer  # noqa: PLC0415
    from ohttp.replay import ReplayGuard, ReplayStore  # noqa: PLC0415

    release = _refreshed(options, release, audit)
    model = tiny_model() if options.tiny_model else load_model(options.model)
    engine = build_engine(model, options)
    now = datetime.now(UTC)
    policy = RotationPolicy(timedelta(seconds=options.key_interval),
                            timedelta(seconds=options.key_grace))
    keys = KeyRing(policy, now=now, rng=os.urandom)
    identity = NodeIdentity.generate(os.urandom)
    measurement, _ = measure_node(source_root(), served_model_path(options), options.config)
    attester = Attester(tee=options.tee, node_id=bytes.fromhex(identity.node_id),
                        measurement=measurement.digest, release=release, now=now)
    attester.bundle(keys.current)
    replay: ReplayStore = (RedisReplayStore.from_url(options.redis_url)
                           if options.redis_url else ReplayGuard())
    gateway = Gateway(keys=keys, engine=engine, model=ServedModel(model.name, model.tokenizer),
                      replay=replay, clock=lambda: datetime.now(UTC), rng=os.urandom,
                      salt_key=os.urandom(32), config=options.gateway)
    server = NodeServer(gateway, attester, options.limits, audit, lambda: datetime.now(UTC))
    return server, identity


def run(options: NodeOptions, memory_hygiene: Mode) -> int:
    """Run the node until SIGTERM / SIGINT; drain; return 0.

    `memory_hygiene` is the way the process erases freed memory; the caller has already
    re-executed the process under it (`node.hygiene.reexec_with_memory_hygiene`).
    """
    from node.hardening import harden, seal_syscalls  # noqa: PLC0415
    from node.metrics import operator_app  # noqa: PLC0415
    from node.replay_redis import RedisReplayStore  # noqa: PLC0415
    from node.server import serve  # noqa: PLC0415

    started = time.monotonic()
    # Only the audit log writes (N5): no library logging, warnings or progress bars.
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    release = check_inputs(options)  # before the audit lines: a bad input is one error line
    audit = AuditLog()
    audit.event("node.memory_hygiene", mode=memory_hygiene)
    for measure, result in harden():
        audit.event("node.hardening", measure=measure, result=result)
    server, identity = build(options, audit, release)
    audit.event("node.started", node_id=identity.node_id, tee=options.tee,
                key_id=server.gateway.keys.current.key_id,
                startup_seconds=round(time.monotonic() - started, 3))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        operator = operator_app(server) if options.metrics_port is not None else None

        def listening() -> None:
            for measure, result in seal_syscalls():
                audit.event("node.hardening", measure=measure, result=result)

        refresh = ((options.log_url, options.release_refresh)
                   if options.log_url is not None and options.release is not None else None)
        replay = server.gateway.replay
        await serve(server, options.host, options.port, stop, operator=operator,
                    operator_port=options.metrics_port, listening=listening,
                    release_refresh=refresh,
                    closing=replay.close if isinstance(replay, RedisReplayStore) else None)

    asyncio.run(main())
    audit.event("node.stopped", requests=server.gateway.counts["submitted"])
    return 0
