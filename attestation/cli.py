"""`hushcc attest ...`: show, verify, simulate and measure attestation bundles.

* `show BUNDLE` prints the bundle's public fields (no verification).
* `verify BUNDLE --policy FILE [--at TIME] [--revocation-cache DIR]` prints every verification
  step; a failure exits 1 and names the failing step (fail closed: a missing log key or GPU
  reference fails too, and so does a missing AMD CRL / NVIDIA OCSP answer unless the policy says
  `revocation = "best-effort"`; the cache layout is in `attestation.revocation`).
* `simulate --key-config FILE --out BUNDLE [--model PATH] [--config FILE]` writes a development
  bundle from the simulated TEE (and simulated GPUs), measuring what `hushcc node serve` with the
  same `--model`/`--config` measures at start (`measure_node`: this installation's code, the
  model's files, the configuration file; without --model: a `--tiny-model` node).
* `measure --root DIR FILE...` prints the self-measurement the image build logs.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.cliparse import add_group, bounded_float, bounded_int
from hushcc.errors import ConfigError, ProtocolError
from hushcc.files import read_bytes, read_text

if TYPE_CHECKING:
    import argparse

    from attestation.bundle import Release
    from hushcc.cliparse import OneLineErrorParser

MAX_GPUS = 16
MAX_HOURS = 24.0 * 366  # a development bundle lives at most a year
MIN_HOURS = 1.0 / 60  # and at least a minute


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add the `attest` command group."""
    group = add_group(subparsers, "attest",
                      "attestation bundles: show, verify, simulate, measure")
    show = group.add_parser("show", help="print a bundle's public fields",
                            description="Print a bundle's public fields (no verification).")
    show.add_argument("bundle", type=Path)
    show.set_defaults(handler=_show)
    verify = group.add_parser(
        "verify", help="verify a bundle and print every step",
        description="Verify a bundle against a policy and print every step; any failed step "
        "exits 1 (fail closed). Revocation that could not be checked prints as [WARN].")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--policy", type=Path, required=True, help="policy TOML file")
    verify.add_argument("--at", help="verification time, RFC 3339 (default: now)")
    verify.add_argument("--nonce", help="the per-request nonce you asked for (64 hex digits)")
    verify.add_argument("--gpu-driver-rim", type=Path,
                        help="NVIDIA driver RIM (SWID XML); needs --gpu-vbios-rim too")
    verify.add_argument("--gpu-vbios-rim", type=Path,
                        help="NVIDIA VBIOS RIM (SWID XML); needs --gpu-driver-rim too")
    verify.add_argument("--tdx-collateral", type=Path, help="cached Intel PCS collateral (JSON)")
    verify.add_argument("--revocation-cache", type=Path,
                        help="directory of cached AMD CRLs (amd/<Product>.crl) and NVIDIA OCSP "
                             "answers (nvidia-ocsp/*.der)")
    verify.set_defaults(handler=_verify)
    sim = group.add_parser(
        "simulate", help="write a development bundle (simulated TEE)",
        description="Write a development bundle from the simulated TEE and simulated GPUs, "
        "binding the public key config to the self-measurement a node started with the same "
        "--model and --config computes (this installation's code, the model, the config).")
    sim.add_argument("--key-config", type=Path, required=True,
                     help="public key config: the FILE.pub of `hushcc ohttp keygen`")
    sim.add_argument("--out", type=Path, required=True, help="bundle file to create")
    sim.add_argument("--gpus", type=bounded_int(0, MAX_GPUS), default=1,
                     help=f"simulated GPUs, 0-{MAX_GPUS} (default 1)")
    sim.add_argument("--hours", type=bounded_float(MIN_HOURS, MAX_HOURS), default=12.0,
                     help="validity in hours (default 12, at most a year)")
    sim.add_argument("--release", type=Path,
                     help="stapled release JSON {entry, index, checkpoint, inclusion_proof}, "
                     "as `hushcc log add` prints it")
    sim.add_argument("--model", type=Path,
                     help="the model the node serves (directory or .gguf), measured with the "
                          "code (default: none, as a --tiny-model node)")
    sim.add_argument("--config", type=Path, help="the node's --config TOML file, measured too")
    sim.add_argument("--entry-out", type=Path, metavar="FILE",
                     help="also write the bundle's release entry (what `hushcc log add` takes)")
    sim.set_defaults(handler=_simulate)
    measure = group.add_parser(
        "measure", help="print the self-measurement of files",
        description="Print the self-measurement (hushcc-measure/v1) of FILE... under --root, "
        "or of the source packages found there; a root with nothing to measure is an error.")
    measure.add_argument("--root", type=Path, required=True, help="directory to measure")
    measure.add_argument("files", nargs="*", help="relative paths (default: the source packages)")
    measure.set_defaults(handler=_measure)


def _show(args: argparse.Namespace) -> int:
    from attestation.bundle import Bundle  # noqa: PLC0415 - keep `--help` fast
    from attestation.sevsnp import SnpReport  # noqa: PLC0415

    b = Bundle.from_json(read_bytes(args.bundle, "bundle"))
    print(f"node_id:     {b.node_id.hex()}")
    print(f"key_config:  {len(b.key_config)} bytes, sha256 {_sha256(b.key_config)}")
    print(f"valid:       {b.not_before.isoformat()} .. {b.not_after.isoformat()}")
    if b.nonce is not None:
        print(f"nonce:       {b.nonce.hex()}")
    print(f"cpu:         {b.cpu.type}, {len(b.cpu.evidence)} bytes, {len(b.cpu.certs)} cert(s)")
    if b.cpu.type in {"sev-snp", "simulated"}:
        try:
            r = SnpReport.from_bytes(b.cpu.evidence)
        except ProtocolError as exc:
            print(f"  report:    unparseable ({exc})")
        else:
            print(f"  report:    version {r.version}, vmpl {r.vmpl}, policy {r.policy:#x}"
                  f"{' (DEBUG)' if r.debug else ''}, reported_tcb {r.reported_tcb:#018x}")
            print(f"  measurement: {r.measurement.hex()}")
            print(f"  report_data: {r.report_data.hex()}")
    for i, g in enumerate(b.gpu):
        print(f"gpu[{i}]:      {g.type}, {len(g.evidence)} bytes, {len(g.certs)} cert(s)")
    rel = b.release
    print(f"release:     index {rel.index}, {len(rel.inclusion_proof)} proof hashes, "
          f"checkpoint {rel.checkpoint.splitlines()[0] if rel.checkpoint else '(none)'}")
    text = rel.entry.decode("utf-8", "replace")
    print(f"  entry:     {''.join(c if c.isprintable() else '?' for c in text)}")
    return 0


def _sha256(data: bytes) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(data).hexdigest()


def _time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("--at must be an RFC 3339 time, e.g. 2026-11-23T20:00:00Z") from exc
    if when.tzinfo is None:
        raise ConfigError("--at must carry a time zone (e.g. Z)")
    return when.astimezone(UTC)


def _verify(args: argparse.Namespace) -> int:
    from attestation.amd import AMD_TRUST  # noqa: PLC0415
    from attestation.gpu import GpuPolicy  # noqa: PLC0415
    from attestation.gpu.simulated import SimulatedGpu  # noqa: PLC0415
    from attestation.policy import parse_policy  # noqa: PLC0415
    from attestation.revocation import RevocationSources, load_revocation_cache  # noqa: PLC0415
    from attestation.simulated import WITH_SIMULATED  # noqa: PLC0415
    from attestation.tdx import TdxPolicy  # noqa: PLC0415
    from attestation.verify_bundle import (  # noqa: PLC0415
        DcapTdxVerifier,
        StapledLogVerifier,
        verify_bundle,
    )

    policy = parse_policy(read_text(args.policy, "policy file", allow_empty=True))
    now = _time(args.at)
    nonce = _hex32(args.nonce) if args.nonce else None
    gpu_policy = None
    if (args.gpu_driver_rim is None) != (args.gpu_vbios_rim is None):
        raise ConfigError("--gpu-driver-rim and --gpu-vbios-rim go together: give both")
    if args.gpu_driver_rim and args.gpu_vbios_rim:
        gpu_policy = GpuPolicy(driver_rim=read_bytes(args.gpu_driver_rim, "GPU driver RIM"),
                               vbios_rim=read_bytes(args.gpu_vbios_rim, "GPU VBIOS RIM"))
    elif policy.allow_simulated:
        gpu_policy = GpuPolicy(reference_measurements=SimulatedGpu().reference_measurements())
    tdx = None
    if args.tdx_collateral:
        tdx = DcapTdxVerifier(read_text(args.tdx_collateral, "TDX collateral"),
                              TdxPolicy(allow_debug=policy.allow_debug))
    witnesses = None
    if policy.log_witnesses:
        from transparency_log.cosignature import witness_policy  # noqa: PLC0415

        try:
            witnesses = witness_policy(policy.log_witnesses, policy.log_witness_threshold)
        except ProtocolError as exc:
            raise ConfigError(f"policy log_witnesses: {exc}") from exc
    log = (StapledLogVerifier(policy.log_key, now, witness_policy=witnesses)
           if policy.log_key else None)
    from attestation.report import AttestationError  # noqa: PLC0415

    try:
        verified = verify_bundle(read_bytes(args.bundle, "bundle"), policy=policy, now=now,
                                 log=log, gpu_policy=gpu_policy, expected_nonce=nonce, tdx=tdx,
                                 revocation=load_revocation_cache(args.revocation_cache)
                                 if args.revocation_cache else RevocationSources(),
                                 cpu_trust=WITH_SIMULATED if policy.allow_simulated else AMD_TRUST)
    except AttestationError as exc:
        print(exc.report.render())
        raise
    print(verified.report.render())
    return 0


def _hex32(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError("--nonce must be 64 hex digits") from exc
    if len(value) != 32:
        raise ConfigError("--nonce must be 64 hex digits")
    return value


def _release(path: Path) -> Release:
    from attestation.bundle import Release  # noqa: PLC0415

    text = read_text(path, "release file")
    problem = ConfigError(f"release file {path} is not the {{entry, index, checkpoint, "
                          "inclusion_proof}} JSON that `hushcc log add` prints")
    try:
        doc = json.loads(text)
        index, checkpoint, proof = doc["index"], doc["checkpoint"], doc["inclusion_proof"]
        entry = base64.b64decode(doc["entry"], validate=True)
        hashes = tuple(base64.b64decode(p, validate=True) for p in proof)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise problem from exc
    if (type(index) is not int or index < 0 or not isinstance(checkpoint, str)
            or not isinstance(proof, list)):
        raise problem
    return Release(entry, index, checkpoint, hashes)


def _public_key_config(path: Path) -> bytes:
    """The one public key config in `path` (application/ohttp-keys); a private key is refused."""
    from ohttp.keyconfig import parse_public_key_config  # noqa: PLC0415

    data = read_bytes(path, "key config")
    try:
        parse_public_key_config(data)
    except ProtocolError as exc:
        raise ConfigError(f"key config {path}: {exc}") from None
    return data


def _check_output(path: Path) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path.is_dir():
        raise ConfigError(f"output is a directory: {path}")
    if not path.parent.is_dir():
        raise ConfigError(f"output directory not found: {path.parent}")


def _simulate(args: argparse.Namespace) -> int:
    from attestation.gpu.simulated import SimulatedGpu  # noqa: PLC0415
    from attestation.measure import measure_node, source_root  # noqa: PLC0415
    from attestation.simulated_node import simulated_bundle  # noqa: PLC0415

    key_config = _public_key_config(args.key_config)  # every input checked before any work
    release = _release(args.release) if args.release else None
    for path in (args.out, args.entry_out):
        if path is not None:
            _check_output(path)
    if args.model is not None and not (args.model.is_dir() or args.model.is_file()):
        raise ConfigError(f"--model not found: {args.model}")
    if args.config is not None:
        read_text(args.config, "--config file")
    measured, files = measure_node(source_root(), args.model, args.config)
    measurement = measured.digest
    bundle = simulated_bundle(
        key_config=key_config, measurement=measurement, now=datetime.now(UTC),
        gpus=[SimulatedGpu() for _ in range(args.gpus)], lifetime=timedelta(hours=args.hours),
        release=release)
    args.out.write_bytes(bundle.to_json())
    if args.entry_out:
        args.entry_out.write_bytes(bundle.release.entry)
    print(f"wrote {args.out}: simulated TEE, {args.gpus} simulated GPU(s), "
          f"measurement {measurement.hex()} over {len(files)} files")
    if release is None:
        print("note: the release entry is not logged; verification fails at step (5) "
              "until it is added to the transparency log")
    return 0


def _measure(args: argparse.Namespace) -> int:
    from attestation.measure import measure_sources  # noqa: PLC0415

    if not args.root.is_dir():
        what = "not found" if not args.root.exists() else "not a directory"
        raise ConfigError(f"--root {what}: {args.root}")
    measured, files = measure_sources(args.root, args.files)
    if not files:
        raise ConfigError(f"nothing to measure under {args.root}: no FILE given and no "
                          "source package (hushcc, ohttp, attestation, ...) found there")
    print(f"{measured.digest.hex()}  ({len(files)} files, hushcc-measure/v1)")
    return 0
